package kubernetes

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// rolloutState reads a Deployment's status the way `kubectl rollout
// status` does. A ProgressDeadlineExceeded condition counts only when the
// controller wrote it at or after since: a rollback re-applied after a
// failed rollout must not trip on the old condition.
func rolloutState(d *appsv1.Deployment, since time.Time) (done bool, err error) {
	if d.Generation > d.Status.ObservedGeneration {
		return false, nil
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" &&
			!c.LastUpdateTime.Time.Before(since.Truncate(time.Second)) {
			return false, fmt.Errorf("deployment %s/%s: %s: %w", d.Namespace, d.Name, c.Message, ErrProgressDeadline)
		}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want, nil
}

// waitRollout watches one Deployment until its rollout completes, fails
// on its progress deadline, or ctx ends. No polling: a list then a watch
// (re-established when the server closes it).
func (p *Platform) waitRollout(ctx context.Context, ns, name string, since time.Time) error {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return p.cs.AppsV1().Deployments(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return p.cs.AppsV1().Deployments(ns).Watch(ctx, o)
		},
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &appsv1.Deployment{}, nil, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Deleted:
			return false, fmt.Errorf("deployment %s/%s deleted during its rollout", ns, name)
		case watch.Added, watch.Modified:
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				return false, nil
			}
			return rolloutState(d, since)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for rollout of deployment %s/%s: %w", ns, name, err)
	}
	return nil
}

// waitPodsGone watches until no pod matching sel is left in ns.
func (p *Platform) waitPodsGone(ctx context.Context, ns string, sel labels.Selector) error {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel.String()
			return p.cs.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel.String()
			return p.cs.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
	var pods cache.Store
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, func(store cache.Store) (bool, error) {
		pods = store
		return len(store.List()) == 0, nil
	}, func(ev watch.Event) (bool, error) {
		// The informer updates its store before it hands out the event.
		return ev.Type == watch.Deleted && len(pods.List()) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("wait for pods %s of %s to go: %w", sel, ns, err)
	}
	return nil
}

// waitNamespaceGone watches until the namespace no longer exists.
func (p *Platform) waitNamespaceGone(ctx context.Context, ns string) error {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ns).String()
			return p.cs.CoreV1().Namespaces().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ns).String()
			return p.cs.CoreV1().Namespaces().Watch(ctx, o)
		},
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Namespace{}, func(store cache.Store) (bool, error) {
		return len(store.List()) == 0, nil
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Deleted, nil
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("wait for namespace %s to go: %w", ns, err)
	}
	return nil
}
