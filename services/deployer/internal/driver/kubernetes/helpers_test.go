package kubernetes_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("OPSUITE_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// newPlatform connects a platform to the harness and closes it at the end.
func newPlatform(t testing.TB) *k8sdriver.Platform {
	t.Helper()
	needCluster(t)
	p, err := k8sdriver.NewForConfig(t.Context(), suite.rc, k8sdriver.Config{}, testLogger(t))
	if err != nil {
		t.Fatalf("new platform: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newTarget is a fresh application environment, deleted at the end.
func newTarget(t testing.TB, p *k8sdriver.Platform, app string) k8sdriver.Target {
	t.Helper()
	tg := k8sdriver.Target{App: app + "-" + suite.run, Environment: "test"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := p.Delete(ctx, tg); err != nil {
			t.Errorf("cleanup: delete %s/%s: %v", tg.App, tg.Environment, err)
		}
	})
	return tg
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// workload is revision rev of the demo application. kwok never pulls the
// image; the scheduler and kwok's stages decide where pods run and when
// they are ready.
func workload(rev int64) k8sdriver.Workload {
	return k8sdriver.Workload{
		Revision:  rev,
		Image:     fmt.Sprintf("registry.example/opsuite/demo:v%d", rev),
		Args:      []string{"-listen", ":8080"},
		Env:       map[string]string{"VERSION": fmt.Sprint(rev)},
		Ports:     []driver.Port{{Name: "http", ContainerPort: 8080}},
		Readiness: &k8sdriver.Probe{HTTPPath: "/healthz", Port: "http", Period: time.Second},
	}
}

// failing is a revision whose pods can never be ready: they ask for more
// CPU than any node has, so they stay Pending (Unschedulable).
func failing(rev int64) k8sdriver.Workload {
	w := workload(rev)
	w.Resources = k8sdriver.Resources{CPUs: 512}
	return w
}

func statusOf(t testing.TB, p *k8sdriver.Platform, tg k8sdriver.Target) k8sdriver.Status {
	t.Helper()
	st, err := p.Status(t.Context(), tg)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// waitStatus waits, on the platform's change notifications (no polling),
// until cond holds for the environment's status.
func waitStatus(t testing.TB, p *k8sdriver.Platform, tg k8sdriver.Target, d time.Duration, what string, cond func(k8sdriver.Status) bool) k8sdriver.Status {
	t.Helper()
	ctx := ctxFor(t, d)
	for {
		ch, err := p.Changes(ctx, tg)
		if err != nil {
			t.Fatalf("changes: %v", err)
		}
		st, err := p.Status(ctx, tg)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: not reached within %s; status: %s", what, d, describe(st))
		}
	}
}

// podsByRevision counts the environment's pods per revision: all, ready.
func podsByRevision(st k8sdriver.Status) (all, ready map[int64]int) {
	all, ready = map[int64]int{}, map[int64]int{}
	for _, p := range st.Pods {
		if p.Reason == "Terminating" {
			continue
		}
		all[p.Revision]++
		if p.Ready {
			ready[p.Revision]++
		}
	}
	return all, ready
}

func describe(st k8sdriver.Status) string {
	var b strings.Builder
	if st.Service != nil {
		fmt.Fprintf(&b, "service %s selector=%v active=%s; ", st.Service.Name, st.Service.Selector, st.Service.ActiveSlot)
	}
	if r := st.Route; r != nil {
		fmt.Fprintf(&b, "httproute %s gateway=%s weights=%v accepted=%q; ", r.Name, r.Gateway, r.Weights, r.Accepted)
	}
	for _, d := range st.Deployments {
		fmt.Fprintf(&b, "deploy %s rev=%d %d/%d ready %s; ", d.Name, d.Revision, d.Ready, d.Replicas, d.Progress)
	}
	for _, p := range st.Pods {
		fmt.Fprintf(&b, "pod %s rev=%d %s ready=%v %s; ", p.Name, p.Revision, p.Phase, p.Ready, p.Reason)
	}
	fmt.Fprintf(&b, "serving=%v", st.ServingRevisions)
	return b.String()
}

// readyWatch records, from its own informer on the admin connection, the
// fewest ready pods of the environment seen after it first saw want ready.
type readyWatch struct {
	mu      sync.Mutex
	armed   bool
	minimum int
	want    int
	store   cache.Store
	events  atomic.Int64
}

func watchReady(t testing.TB, tg k8sdriver.Target, want int) *readyWatch {
	t.Helper()
	rw := &readyWatch{minimum: want, want: want}
	f := informers.NewSharedInformerFactoryWithOptions(suite.admin, 0,
		informers.WithNamespace(tg.App+"-"+tg.Environment),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{driver.LabelApp: tg.App}).String()
		}))
	inf := f.Core().V1().Pods().Informer()
	rw.store = inf.GetStore()
	check := func() {
		rw.events.Add(1)
		n := 0
		for _, o := range rw.store.List() {
			if podReady(o.(*corev1.Pod)) {
				n++
			}
		}
		rw.mu.Lock()
		defer rw.mu.Unlock()
		if !rw.armed {
			rw.armed = n >= rw.want
			return
		}
		rw.minimum = min(rw.minimum, n)
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { check() }, UpdateFunc: func(any, any) { check() }, DeleteFunc: func(any) { check() },
	})
	stop := make(chan struct{})
	f.Start(stop)
	t.Cleanup(func() { close(stop); f.Shutdown() })
	if !cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced) {
		t.Fatal("ready watch: cache not synced")
	}
	check()
	return rw
}

func (rw *readyWatch) min() (int, bool) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.minimum, rw.armed
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitEndpoints watches the Service's EndpointSlices until the pods
// behind its ready endpoints run exactly the revisions want, as the
// EndpointSlice controller publishes them.
func waitEndpoints(t testing.TB, tg k8sdriver.Target, svc string, want []int64) {
	t.Helper()
	ns := tg.App + "-" + tg.Environment
	sel := "kubernetes.io/service-name=" + svc
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return suite.admin.DiscoveryV1().EndpointSlices(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return suite.admin.DiscoveryV1().EndpointSlices(ns).Watch(ctx, o)
		},
	}
	var store cache.Store
	var last []int64
	match := func() bool {
		last = endpointRevisions(t, ns, store)
		return slices.Equal(last, want)
	}
	ctx := ctxFor(t, 20*time.Second)
	_, err := watchtools.UntilWithSync(ctx, lw, &discoveryv1.EndpointSlice{}, func(s cache.Store) (bool, error) {
		store = s
		return match(), nil
	}, func(watch.Event) (bool, error) { return match(), nil })
	if err != nil {
		t.Fatalf("endpoints of %s/%s serve revisions %v, want %v: %v", ns, svc, last, want, err)
	}
}

func endpointRevisions(t testing.TB, ns string, store cache.Store) []int64 {
	revs := map[int64]bool{}
	for _, o := range store.List() {
		s := o.(*discoveryv1.EndpointSlice)
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			pod, err := suite.admin.CoreV1().Pods(ns).Get(t.Context(), ep.TargetRef.Name, metav1.GetOptions{})
			if err != nil {
				continue
			}
			r, _ := strconv.ParseInt(pod.Labels[driver.LabelRevision], 10, 64)
			revs[r] = true
		}
	}
	out := make([]int64, 0, len(revs))
	for r := range revs {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}
