package kubernetes

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// nsInformers are the watches of one namespace: pods, Deployments and
// Services carrying the managed-by label, kept in caches that Status reads.
type nsInformers struct {
	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	deploys  appslisters.DeploymentLister
	services corelisters.ServiceLister
	synced   []cache.InformerSynced
	changed  chan struct{} // closed and replaced on every event
	mu       chan struct{} // 1-slot lock for changed
	done     chan struct{}
	handler  cache.ResourceEventHandler
	// routes watches HTTPRoutes; started (under Platform.mu) by the first
	// Status or Changes of an environment with a Gateway on a cluster
	// serving them.
	routes *routeInformer
}

// routeInformer is the watch of a namespace's HTTPRoutes (dynamic: the
// Gateway API has no typed client here).
type routeInformer struct {
	factory dynamicinformer.DynamicSharedInformerFactory
	lister  cache.GenericNamespaceLister
	synced  cache.InformerSynced

	mu     sync.Mutex
	err    error         // last list/watch error
	failed chan struct{} // closed at the first list/watch error
}

func (r *routeInformer) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		close(r.failed)
	}
	r.err = err
}

func (r *routeInformer) failures() (failed <-chan struct{}, last error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed, r.err
}

func (n *nsInformers) stop() {
	close(n.done)
	n.factory.Shutdown()
	if n.routes != nil {
		n.routes.factory.Shutdown()
	}
}

func (n *nsInformers) notify() {
	n.mu <- struct{}{}
	close(n.changed)
	n.changed = make(chan struct{})
	<-n.mu
}

func (n *nsInformers) changes() <-chan struct{} {
	n.mu <- struct{}{}
	defer func() { <-n.mu }()
	return n.changed
}

// watchNamespace starts (once) the informers of ns and waits until their
// caches hold the current state.
func (p *Platform) watchNamespace(ctx context.Context, ns string) (*nsInformers, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("kubernetes: platform closed")
	}
	n, ok := p.informers[ns]
	if !ok {
		f := informers.NewSharedInformerFactoryWithOptions(p.cs, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.LabelSelector = labels.SelectorFromSet(labels.Set{driver.LabelManagedBy: driver.ManagedByValue}).String()
			}))
		n = &nsInformers{
			factory: f,
			changed: make(chan struct{}),
			mu:      make(chan struct{}, 1),
			done:    make(chan struct{}),
		}
		h := cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { n.notify() },
			UpdateFunc: func(any, any) { n.notify() },
			DeleteFunc: func(any) { n.notify() },
		}
		n.handler = h
		pi, di, si := f.Core().V1().Pods(), f.Apps().V1().Deployments(), f.Core().V1().Services()
		for _, inf := range []cache.SharedIndexInformer{pi.Informer(), di.Informer(), si.Informer()} {
			if _, err := inf.AddEventHandler(h); err != nil {
				p.mu.Unlock()
				return nil, fmt.Errorf("kubernetes: watch namespace %s: %w", ns, err)
			}
			n.synced = append(n.synced, inf.HasSynced)
		}
		n.pods, n.deploys, n.services = pi.Lister(), di.Lister(), si.Lister()
		f.Start(n.done)
		p.informers[ns] = n
	}
	p.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), n.synced...) {
		return nil, fmt.Errorf("kubernetes: watch namespace %s: caches not synced: %w", ns, context.Cause(ctx))
	}
	return n, nil
}

// watchRoutes starts (once) the HTTPRoute informer of ns and waits until
// its cache holds the current state. When listing fails (e.g. the
// deployer's RBAC lacks httproutes) it returns that error rather than
// waiting for ctx; the informer keeps retrying in the background.
func (p *Platform) watchRoutes(ctx context.Context, ns string, n *nsInformers) (*routeInformer, error) {
	p.mu.Lock()
	if p.closed || p.informers[ns] != n {
		p.mu.Unlock()
		return nil, fmt.Errorf("kubernetes: watch httproutes of %s: platform closed or namespace forgotten", ns)
	}
	r := n.routes
	if r == nil {
		f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(p.dyn, 0, ns, func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{driver.LabelManagedBy: driver.ManagedByValue}).String()
		})
		gi := f.ForResource(httpRouteGVR)
		inf := gi.Informer()
		r = &routeInformer{factory: f, lister: gi.Lister().ByNamespace(ns), synced: inf.HasSynced, failed: make(chan struct{})}
		if _, err := inf.AddEventHandler(n.handler); err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("kubernetes: watch httproutes of %s: %w", ns, err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			r.fail(err)
			p.log.Warn("watch httproutes", "namespace", ns, "err", err)
		}); err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("kubernetes: watch httproutes of %s: %w", ns, err)
		}
		f.Start(n.done)
		n.routes = r
	}
	p.mu.Unlock()
	if r.synced() {
		return r, nil
	}
	failed, _ := r.failures()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-failed:
			cancel()
		case <-wctx.Done():
		}
	}()
	if !cache.WaitForCacheSync(wctx.Done(), r.synced) {
		if _, err := r.failures(); err != nil {
			return nil, apiErr("watch httproutes of "+ns, err)
		}
		return nil, fmt.Errorf("kubernetes: watch httproutes of %s: cache not synced: %w", ns, context.Cause(ctx))
	}
	return r, nil
}

// watch starts the watches Status and Changes of t read: the namespace's,
// and its HTTPRoutes' when t is routed by a Gateway.
func (p *Platform) watch(ctx context.Context, t Target) (*nsInformers, *routeInformer, error) {
	n, err := p.watchNamespace(ctx, t.namespace())
	if err != nil {
		return nil, nil, err
	}
	on, err := p.routed(ctx, t)
	if err != nil || !on {
		return n, nil, err
	}
	r, err := p.watchRoutes(ctx, t.namespace(), n)
	if err != nil {
		return nil, nil, err
	}
	return n, r, nil
}

func (p *Platform) forgetNamespace(ns string) {
	p.mu.Lock()
	n, ok := p.informers[ns]
	delete(p.informers, ns)
	p.mu.Unlock()
	if ok {
		n.stop()
	}
}

// PodStatus is one pod as the cluster reports it.
type PodStatus struct {
	Name     string
	Slot     string
	Revision int64
	Phase    corev1.PodPhase
	Ready    bool
	Restarts int32
	Node     string
	IP       string
	// Reason says why the pod is not ready, when it is not.
	Reason    string
	StartedAt time.Time
}

// DeploymentStatus is one slot's Deployment.
type DeploymentStatus struct {
	Name      string
	Slot      string
	Revision  int64
	Replicas  int32 // desired
	Ready     int32
	Updated   int32
	Available int32
	// Progress is the reason of the Progressing condition
	// (NewReplicaSetAvailable, ReplicaSetUpdated, ProgressDeadlineExceeded).
	Progress string
	Message  string
}

// ServiceStatus is the Service in front of the pods.
type ServiceStatus struct {
	Name       string
	Type       corev1.ServiceType
	ClusterIP  string
	ActiveSlot string
	// Selector is the Service's pod selector; without LabelSlot during a
	// canary (both slots serve).
	Selector map[string]string
	// Ingress lists load balancer addresses, when the cluster assigned any.
	Ingress []string
}

// Status is an application environment as the informers see it.
type Status struct {
	Namespace string
	Service   *ServiceStatus
	// Route is the HTTPRoute of an environment with a Gateway on a cluster
	// serving HTTPRoutes, once written; else nil.
	Route       *RouteStatus
	Deployments []DeploymentStatus
	Pods        []PodStatus
	// ServingRevisions are the revisions of ready pods the Service selects.
	ServingRevisions []int64
}

// Status reports the environment from the informer caches (a watch per
// namespace, started on first use), not by listing the API each time.
func (p *Platform) Status(ctx context.Context, t Target) (Status, error) {
	v := validation.New("target")
	validateTarget(v, t)
	if err := invalid(v); err != nil {
		return Status{}, err
	}
	n, r, err := p.watch(ctx, t)
	if err != nil {
		return Status{}, err
	}
	st, err := n.status(t)
	if err != nil || r == nil {
		return st, err
	}
	obj, err := r.lister.Get(t.routeName())
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return Status{}, fmt.Errorf("kubernetes: httproute %s/%s: %w", t.namespace(), t.routeName(), err)
	default:
		u, ok := obj.(*unstructured.Unstructured)
		if !ok || !ours(u, t) {
			break
		}
		if st.Route, err = t.routeStatusOf(u); err != nil {
			return Status{}, err
		}
	}
	return st, nil
}

// Changes returns a channel closed at the next change of any object of
// the environment's namespace that the deployer manages.
func (p *Platform) Changes(ctx context.Context, t Target) (<-chan struct{}, error) {
	n, _, err := p.watch(ctx, t)
	if err != nil {
		return nil, err
	}
	return n.changes(), nil
}

func (n *nsInformers) status(t Target) (Status, error) {
	ns := t.namespace()
	st := Status{Namespace: ns}
	sel := labels.SelectorFromSet(t.selector())
	svc, err := n.services.Services(ns).Get(t.serviceName())
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return Status{}, fmt.Errorf("kubernetes: service %s/%s: %w", ns, t.serviceName(), err)
	default:
		ss := &ServiceStatus{
			Name: svc.Name, Type: svc.Spec.Type, ClusterIP: svc.Spec.ClusterIP,
			ActiveSlot: svc.Annotations[AnnotationActiveSlot], Selector: svc.Spec.Selector,
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ss.Ingress = append(ss.Ingress, in.IP+in.Hostname)
		}
		st.Service = ss
	}
	deps, err := n.deploys.Deployments(ns).List(sel)
	if err != nil {
		return Status{}, fmt.Errorf("kubernetes: deployments of %s: %w", ns, err)
	}
	for _, d := range deps {
		st.Deployments = append(st.Deployments, deploymentStatus(d))
	}
	slices.SortFunc(st.Deployments, func(a, b DeploymentStatus) int { return strings.Compare(a.Name, b.Name) })
	pods, err := n.pods.Pods(ns).List(sel)
	if err != nil {
		return Status{}, fmt.Errorf("kubernetes: pods of %s: %w", ns, err)
	}
	serving := map[int64]bool{}
	for _, pod := range pods {
		ps := podStatus(pod)
		st.Pods = append(st.Pods, ps)
		if ps.Ready && st.Service != nil && labels.SelectorFromSet(st.Service.Selector).Matches(labels.Set(pod.Labels)) {
			serving[ps.Revision] = true
		}
	}
	slices.SortFunc(st.Pods, func(a, b PodStatus) int { return strings.Compare(a.Name, b.Name) })
	for r := range serving {
		st.ServingRevisions = append(st.ServingRevisions, r)
	}
	slices.Sort(st.ServingRevisions)
	return st, nil
}

func deploymentStatus(d *appsv1.Deployment) DeploymentStatus {
	ds := DeploymentStatus{
		Name: d.Name, Slot: d.Labels[LabelSlot],
		Ready: d.Status.ReadyReplicas, Updated: d.Status.UpdatedReplicas, Available: d.Status.AvailableReplicas,
	}
	ds.Revision, _ = strconv.ParseInt(d.Labels[driver.LabelRevision], 10, 64)
	if d.Spec.Replicas != nil {
		ds.Replicas = *d.Spec.Replicas
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			ds.Progress, ds.Message = c.Reason, c.Message
		}
	}
	return ds
}

func podStatus(pod *corev1.Pod) PodStatus {
	ps := PodStatus{
		Name: pod.Name, Slot: pod.Labels[LabelSlot], Phase: pod.Status.Phase,
		Node: pod.Spec.NodeName, IP: pod.Status.PodIP,
	}
	ps.Revision, _ = strconv.ParseInt(pod.Labels[driver.LabelRevision], 10, 64)
	if pod.Status.StartTime != nil {
		ps.StartedAt = pod.Status.StartTime.Time
	}
	var readyCond *corev1.PodCondition
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			readyCond = &pod.Status.Conditions[i]
		}
	}
	ps.Ready = readyCond != nil && readyCond.Status == corev1.ConditionTrue && pod.DeletionTimestamp == nil
	for _, cs := range pod.Status.ContainerStatuses {
		ps.Restarts += cs.RestartCount
	}
	if !ps.Ready {
		ps.Reason = notReadyReason(pod, readyCond)
	}
	return ps
}

// notReadyReason is the most telling cause a pod is not ready: being
// deleted, not scheduled, a waiting or crashed container, then the Ready
// condition's own words.
func notReadyReason(pod *corev1.Pod, ready *corev1.PodCondition) string {
	if pod.DeletionTimestamp != nil {
		return "Terminating"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return join(c.Reason, c.Message, "not scheduled")
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			return join(cs.State.Waiting.Reason, cs.State.Waiting.Message, "container waiting")
		case cs.State.Terminated != nil:
			return join(cs.State.Terminated.Reason, cs.State.Terminated.Message, "container terminated with exit code "+strconv.Itoa(int(cs.State.Terminated.ExitCode)))
		case !cs.Ready:
			return "container " + cs.Name + " running but not passing its readiness probe"
		}
	}
	if ready != nil {
		return join(ready.Reason, ready.Message, "not ready")
	}
	if pod.Spec.NodeName == "" {
		return "Pending: waiting to be scheduled"
	}
	return "Pending: " + string(pod.Status.Phase)
}

func join(reason, msg, fallback string) string {
	switch {
	case reason != "" && msg != "":
		return reason + ": " + msg
	case reason != "":
		return reason
	case msg != "":
		return msg
	}
	return fallback
}
