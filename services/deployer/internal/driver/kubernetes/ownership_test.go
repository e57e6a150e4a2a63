package kubernetes_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

func foreignNamespace(t *testing.T, name string) {
	t.Helper()
	_, err := suite.admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := suite.admin.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("remove namespace %s: %v", name, err)
		}
	})
}

func foreignDeployment(t *testing.T, ns, name string, selector, podLabels map[string]string) *appsv1.Deployment {
	t.Helper()
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"team": "someone-else"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/theirs:1"}}},
			},
		},
	}
	got, err := suite.admin.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create foreign deployment %s/%s: %v", ns, name, err)
	}
	return got
}

func wantNotOwned(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, k8sdriver.ErrNotOwned) {
		t.Fatalf("%s = %v, want ErrNotOwned", what, err)
	}
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition {
		t.Errorf("%s: code %s, want FailedPrecondition", what, st.Code())
	}
}

func TestForeignObjectsAreNeverTouched(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ctx := ctxFor(t, 60*time.Second)

	t.Run("derived namespace exists and is not ours", func(t *testing.T) {
		tg := k8sdriver.Target{App: "taken-" + suite.run, Environment: "prod"}
		foreignNamespace(t, tg.App+"-prod")
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
		deps, err := suite.admin.AppsV1().Deployments(tg.App+"-prod").List(ctx, metav1.ListOptions{})
		if err != nil || len(deps.Items) != 0 {
			t.Errorf("deployments in the foreign namespace: %d, %v", len(deps.Items), err)
		}
		if err := p.Delete(ctx, tg); err != nil {
			t.Errorf("delete: %v", err)
		}
		if _, err := suite.admin.CoreV1().Namespaces().Get(ctx, tg.App+"-prod", metav1.GetOptions{}); err != nil {
			t.Errorf("foreign namespace after Delete: %v, want it kept", err)
		}
	})

	ns := "shared-" + suite.run
	foreignNamespace(t, ns)

	t.Run("same name", func(t *testing.T) {
		tg := k8sdriver.Target{App: "web", Environment: "prod", Namespace: ns}
		theirs := foreignDeployment(t, ns, "web-prod-blue", map[string]string{"app": "web"}, map[string]string{"app": "web"})
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
		if err := p.Delete(ctx, tg); err != nil {
			t.Errorf("delete: %v", err)
		}
		now, err := suite.admin.AppsV1().Deployments(ns).Get(ctx, theirs.Name, metav1.GetOptions{})
		if err != nil || now.Generation != theirs.Generation || !maps.Equal(now.Labels, theirs.Labels) ||
			!maps.Equal(now.Spec.Template.Labels, theirs.Spec.Template.Labels) || hasManager(now.ManagedFields, k8sdriver.FieldManager) {
			t.Errorf("foreign deployment changed or gone: %v", err)
		}
	})

	t.Run("selector clash", func(t *testing.T) {
		tg := k8sdriver.Target{App: "api", Environment: "prod", Namespace: ns}
		// Their pods carry our environment's labels: our Service would
		// route to them, our Deployment could adopt them.
		foreignDeployment(t, ns, "impostor", map[string]string{"x": "y"}, map[string]string{
			"x": "y", driver.LabelManagedBy: driver.ManagedByValue, driver.LabelApp: "api", driver.LabelEnvironment: "prod",
		})
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
	})

	t.Run("their selector would adopt our pods", func(t *testing.T) {
		tg := k8sdriver.Target{App: "cart", Environment: "prod", Namespace: ns}
		foreignDeployment(t, ns, "greedy", map[string]string{driver.LabelApp: "cart"}, map[string]string{driver.LabelApp: "cart", "x": "z"})
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
	})

	t.Run("invalid input never reaches the cluster", func(t *testing.T) {
		tg := k8sdriver.Target{App: "Bad_Name", Environment: "prod"}
		err := p.Rolling(ctx, tg, workload(1), opts(1))
		if !errors.Is(err, driver.ErrInvalidSpec) {
			t.Fatalf("rolling = %v, want ErrInvalidSpec", err)
		}
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
			t.Errorf("code %s, want InvalidArgument", st.Code())
		}
		bad := workload(1)
		bad.Image = "UPPER/case image"
		if err := p.Rolling(ctx, k8sdriver.Target{App: "badimage-" + suite.run, Environment: "prod"}, bad, opts(1)); !errors.Is(err, driver.ErrInvalidSpec) {
			t.Errorf("bad image = %v, want ErrInvalidSpec", err)
		}
		if _, err := suite.admin.CoreV1().Namespaces().Get(ctx, "badimage-"+suite.run+"-prod", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace for a rejected spec: %v, want NotFound", err)
		}
	})

	t.Run("explicit namespace kept on delete", func(t *testing.T) {
		tg := k8sdriver.Target{App: "ok", Environment: "prod", Namespace: ns}
		if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
			t.Fatalf("rolling into a shared namespace: %v", err)
		}
		if err := p.Delete(ctx, tg); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := suite.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("shared namespace after delete: %v, want kept", err)
		}
		left, _ := suite.admin.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: driver.LabelApp + "=ok"})
		if len(left.Items) != 0 {
			t.Errorf("%d deployments of ours left", len(left.Items))
		}
		all, _ := suite.admin.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if len(all.Items) != 3 {
			t.Errorf("foreign deployments left: %d, want 3", len(all.Items))
		}
	})
}

func hasManager(fs []metav1.ManagedFieldsEntry, manager string) bool {
	for _, f := range fs {
		if f.Manager == manager {
			return true
		}
	}
	return false
}
