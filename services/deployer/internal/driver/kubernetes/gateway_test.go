package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/yaml"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

// EnvGatewayAPICRDs names the folder of the Gateway API's standard CRDs
// (sigs.k8s.io/gateway-api config/crd/standard). scripts/kube-harness/start.sh
// writes it to the env file beside the kubeconfig, where the tests also
// look when the variable is unset.
const EnvGatewayAPICRDs = "OPSUITE_GATEWAY_API_CRDS"

const testGateway = "infra/public"

var (
	crdGVR   = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	routeGVR = schema.GroupVersionResource{Group: k8sdriver.GatewayAPIGroup, Version: "v1", Resource: "httproutes"}
)

// gatewayAPICRDs is the folder of the standard CRDs, or a skip (a failure
// with OPSUITE_REQUIRE_KUBE=1) when nobody said where it is.
func gatewayAPICRDs(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvGatewayAPICRDs)
	if dir == "" {
		if f, err := os.Open(filepath.Join(filepath.Dir(os.Getenv(EnvKubeconfig)), "env")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), EnvGatewayAPICRDs+"="); ok {
					dir = v
				}
			}
			f.Close()
		}
	}
	if dir == "" {
		msg := EnvGatewayAPICRDs + " is not set and the harness env file does not name it: start the harness with scripts/kube-harness/start.sh"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

func adminDynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(suite.rc)
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	return d
}

var gatewayAPI struct {
	mu        sync.Mutex
	installed bool
}

// installGatewayAPI installs the real HTTPRoute CRD of Gateway API v1.6.3
// (decoded from its YAML into an unstructured object and created with the
// dynamic client), waits until it is Established and discovery serves
// it. CRDs are cluster-wide: it stays installed, as on a real cluster.
func installGatewayAPI(t testing.TB) dynamic.Interface {
	t.Helper()
	needCluster(t)
	dir := gatewayAPICRDs(t)
	dyn := adminDynamic(t)
	gatewayAPI.mu.Lock()
	defer gatewayAPI.mu.Unlock()
	if gatewayAPI.installed {
		return dyn
	}
	ctx := ctxFor(t, 2*time.Minute)
	data, err := os.ReadFile(filepath.Join(dir, "gateway.networking.k8s.io_httproutes.yaml"))
	if err != nil {
		t.Fatalf("read the HTTPRoute CRD: %v", err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("decode the HTTPRoute CRD: %v", err)
	}
	crd := &unstructured.Unstructured{}
	if err := crd.UnmarshalJSON(js); err != nil {
		t.Fatalf("decode the HTTPRoute CRD: %v", err)
	}
	if crd.GetKind() != "CustomResourceDefinition" || crd.GetName() != "httproutes.gateway.networking.k8s.io" {
		t.Fatalf("%s holds %s %s, not the HTTPRoute CRD", dir, crd.GetKind(), crd.GetName())
	}
	start := time.Now()
	_, err = dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		t.Logf("HTTPRoute CRD already installed")
	case err != nil:
		t.Fatalf("create the HTTPRoute CRD: %v", err)
	}
	name := crd.GetName()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return dyn.Resource(crdGVR).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return dyn.Resource(crdGVR).Watch(ctx, o)
		},
	}
	established := func(u *unstructured.Unstructured) bool {
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	}
	_, err = watchtools.UntilWithSync(ctx, lw, &unstructured.Unstructured{}, func(s cache.Store) (bool, error) {
		for _, o := range s.List() {
			if established(o.(*unstructured.Unstructured)) {
				return true, nil
			}
		}
		return false, nil
	}, func(ev watch.Event) (bool, error) {
		u, ok := ev.Object.(*unstructured.Unstructured)
		return ok && ev.Type != watch.Deleted && established(u), nil
	})
	if err != nil {
		t.Fatalf("HTTPRoute CRD not established: %v", err)
	}
	// Discovery has no watch: ask until the group version lists httproutes.
	for !httpRoutesServed(t) {
		select {
		case <-ctx.Done():
			t.Fatalf("discovery does not serve %s/v1 httproutes: %v", k8sdriver.GatewayAPIGroup, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("HTTPRoute CRD established and discovered in %s", time.Since(start).Round(time.Millisecond))
	gatewayAPI.installed = true
	return dyn
}

func httpRoutesServed(t testing.TB) bool {
	l, err := suite.admin.Discovery().ServerResourcesForGroupVersion(k8sdriver.GatewayAPIGroup + "/v1")
	if err != nil {
		return false
	}
	for _, r := range l.APIResources {
		if r.Name == "httproutes" {
			return true
		}
	}
	return false
}

// backendWeights reads an HTTPRoute's backend weights by Service name,
// as the API server stored them.
func backendWeights(t testing.TB, u *unstructured.Unstructured) map[string]int64 {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(u.Object, "spec", "rules")
	if err != nil || len(rules) != 1 {
		t.Fatalf("httproute %s: rules %v (%v), want one", u.GetName(), rules, err)
	}
	refs, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "backendRefs")
	out := map[string]int64{}
	for _, r := range refs {
		m := r.(map[string]any)
		w, _ := m["weight"].(int64)
		out[m["name"].(string)] = w
	}
	return out
}

func getRoute(t testing.TB, dyn dynamic.Interface, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := dyn.Resource(routeGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get httproute %s/%s: %v", ns, name, err)
	}
	return u
}

// lockedBuffer is a log sink the platform's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGatewayWithoutGatewayAPIUsesReplicaRatio is not parallel: it runs
// before the parallel tests that install the HTTPRoute CRD, so on a fresh
// harness the platform meets a cluster without the Gateway API. When the
// CRD is already there (an earlier run on the same harness), the platform
// is pointed at a group version nobody serves; discovery is real either
// way.
func TestGatewayWithoutGatewayAPIUsesReplicaRatio(t *testing.T) {
	needCluster(t)
	logs := &lockedBuffer{}
	p, err := k8sdriver.NewForConfig(t.Context(), suite.rc, k8sdriver.Config{}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("new platform: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if httpRoutesServed(t) {
		k8sdriver.AskDiscoveryFor(p, "absent.opsuite.test/v1")
		t.Logf("the harness already serves HTTPRoutes: the platform looks for them in absent.opsuite.test/v1")
	}
	tg := newTarget(t, p, "gwabsent")
	tg.Gateway = testGateway
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(2)); err != nil {
		t.Fatalf("deploy v1: %v", err)
	}
	if err := p.Canary(ctx, tg, workload(2), 50, opts(2)); err != nil {
		t.Fatalf("canary at 50%% without the Gateway API: %v", err)
	}
	st := waitStatus(t, p, tg, 30*time.Second, "one pod per revision", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return ready[1] == 1 && ready[2] == 1 && len(all) == 2
	})
	if st.Route != nil || !slices.Equal(st.ServingRevisions, []int64{1, 2}) || st.Service.Selector[k8sdriver.LabelSlot] != "" {
		t.Errorf("without the Gateway API: route %+v serving %v selector %v, want no route and the Service on both slots",
			st.Route, st.ServingRevisions, st.Service.Selector)
	}
	waitEndpoints(t, tg, st.Service.Name, []int64{1, 2})
	svcs, err := suite.admin.CoreV1().Services(st.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil || len(svcs.Items) != 1 || svcs.Items[0].Name != tg.App {
		t.Errorf("services: %d (%v), want only %s: no slot Services without an HTTPRoute", len(svcs.Items), err, tg.App)
	}
	if !strings.Contains(logs.String(), "canary splits traffic by replica ratio") || !strings.Contains(logs.String(), "gateway="+testGateway) {
		t.Errorf("no log line about the replica-ratio fallback; logs:\n%s", logs)
	}
	if err := p.Abort(ctx, tg, 1, opts(2)); err != nil {
		t.Fatalf("abort: %v", err)
	}
}

func TestCanaryThroughGatewayHTTPRoute(t *testing.T) {
	t.Parallel()
	dyn := installGatewayAPI(t)
	p := newPlatform(t)
	tg := newTarget(t, p, "gwcanary")
	tg.Gateway = testGateway
	ns := tg.App + "-" + tg.Environment
	blueSvc, greenSvc := tg.App+"-"+k8sdriver.SlotBlue, tg.App+"-"+k8sdriver.SlotGreen
	ctx := ctxFor(t, 4*time.Minute)

	if err := p.Rolling(ctx, tg, workload(1), opts(4)); err != nil {
		t.Fatalf("deploy v1: %v", err)
	}
	r := getRoute(t, dyn, ns, tg.App)
	if w := backendWeights(t, r); !maps.Equal(w, map[string]int64{blueSvc: 100, greenSvc: 0}) {
		t.Errorf("after rolling v1: weights %v, want all on blue", w)
	}
	parents, _, _ := unstructured.NestedSlice(r.Object, "spec", "parentRefs")
	if len(parents) != 1 || parents[0].(map[string]any)["namespace"] != "infra" || parents[0].(map[string]any)["name"] != "public" {
		t.Errorf("parentRefs = %v, want the Gateway infra/public", parents)
	}
	if !hasManager(r.GetManagedFields(), k8sdriver.FieldManager) || r.GetLabels()[driver.LabelApp] != tg.App {
		t.Errorf("httproute managed fields %v labels %v, want applied by %s with the deployer's labels", r.GetManagedFields(), r.GetLabels(), k8sdriver.FieldManager)
	}
	for slot, name := range map[string]string{k8sdriver.SlotBlue: blueSvc, k8sdriver.SlotGreen: greenSvc} {
		svc, err := suite.admin.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("slot service %s: %v", name, err)
		}
		if svc.Spec.Selector[k8sdriver.LabelSlot] != slot || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 {
			t.Errorf("slot service %s: selector %v ports %v", name, svc.Spec.Selector, svc.Spec.Ports)
		}
	}

	// v2 as a canary (green): weights exactly as asked, replicas by ratio.
	for _, step := range []struct {
		weight           int32
		wantNew, wantOld int
		blue, green      int32
	}{
		{25, 1, 3, 75, 25},
		{50, 2, 2, 50, 50},
		{100, 4, 0, 0, 100},
	} {
		if err := p.Canary(ctx, tg, workload(2), step.weight, opts(4)); err != nil {
			t.Fatalf("canary at %d%%: %v", step.weight, err)
		}
		want := map[string]int32{k8sdriver.SlotBlue: step.blue, k8sdriver.SlotGreen: step.green}
		st := waitStatus(t, p, tg, 30*time.Second, "canary step settled", func(st k8sdriver.Status) bool {
			all, ready := podsByRevision(st)
			return ready[2] == step.wantNew && all[1] == step.wantOld && ready[1] == step.wantOld &&
				st.Route != nil && maps.Equal(st.Route.Weights, want)
		})
		if st.Route.Name != tg.App || st.Route.Gateway != testGateway || st.Route.Accepted != "" {
			t.Errorf("weight %d: route status %+v", step.weight, st.Route)
		}
		if w := backendWeights(t, getRoute(t, dyn, ns, tg.App)); !maps.Equal(w, map[string]int64{blueSvc: int64(step.blue), greenSvc: int64(step.green)}) {
			t.Errorf("weight %d: stored weights %v, want blue %d green %d", step.weight, w, step.blue, step.green)
		}
		waitEndpoints(t, tg, greenSvc, []int64{2})
		if step.wantOld > 0 {
			waitEndpoints(t, tg, blueSvc, []int64{1})
		}
	}

	// v3 as a canary (blue) at 50 %, aborted: all weight back on green (v2).
	if err := p.Canary(ctx, tg, workload(3), 50, opts(4)); err != nil {
		t.Fatalf("canary v3 at 50%%: %v", err)
	}
	if w := backendWeights(t, getRoute(t, dyn, ns, tg.App)); !maps.Equal(w, map[string]int64{blueSvc: 50, greenSvc: 50}) {
		t.Errorf("canary v3 at 50%%: weights %v", w)
	}
	if err := p.Abort(ctx, tg, 2, opts(4)); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if w := backendWeights(t, getRoute(t, dyn, ns, tg.App)); !maps.Equal(w, map[string]int64{blueSvc: 0, greenSvc: 100}) {
		t.Errorf("after abort: weights %v, want all on green", w)
	}
	waitStatus(t, p, tg, 30*time.Second, "v3 gone after abort", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return all[3] == 0 && ready[2] == 4 && st.Route != nil && st.Route.Weights[k8sdriver.SlotGreen] == 100
	})

	// Blue-green: the preview gets no traffic, the switch moves it all.
	if err := p.Preview(ctx, tg, workload(4), opts(4)); err != nil {
		t.Fatalf("preview v4: %v", err)
	}
	if w := backendWeights(t, getRoute(t, dyn, ns, tg.App)); w[greenSvc] != 100 || w[blueSvc] != 0 {
		t.Errorf("during preview: weights %v, want all still on green", w)
	}
	if err := p.Switch(ctx, tg, 4); err != nil {
		t.Fatalf("switch to v4: %v", err)
	}
	if w := backendWeights(t, getRoute(t, dyn, ns, tg.App)); !maps.Equal(w, map[string]int64{blueSvc: 100, greenSvc: 0}) {
		t.Errorf("after switch: weights %v, want all on blue", w)
	}

	if err := p.Delete(ctx, tg); err != nil {
		t.Fatalf("delete: %v", err)
	}
	sel := metav1.ListOptions{LabelSelector: driver.LabelApp + "=" + tg.App}
	routes, err := dyn.Resource(routeGVR).Namespace("").List(ctx, sel)
	if err != nil || len(routes.Items) != 0 {
		t.Errorf("httproutes left after delete: %d (%v)", len(routes.Items), err)
	}
	svcs, err := suite.admin.CoreV1().Services("").List(ctx, sel)
	if err != nil || len(svcs.Items) != 0 {
		t.Errorf("services left after delete: %d (%v)", len(svcs.Items), err)
	}
}

func TestForeignHTTPRouteIsNeverTouched(t *testing.T) {
	t.Parallel()
	dyn := installGatewayAPI(t)
	p := newPlatform(t)
	ctx := ctxFor(t, 90*time.Second)
	ns := "gwshared-" + suite.run
	foreignNamespace(t, ns)

	t.Run("httproute", func(t *testing.T) {
		tg := k8sdriver.Target{App: "web", Environment: "prod", Namespace: ns, Gateway: testGateway}
		weight := int64(1)
		theirs := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": k8sdriver.GatewayAPIGroup + "/v1",
			"kind":       "HTTPRoute",
			"metadata":   map[string]any{"name": "web-prod", "namespace": ns, "labels": map[string]any{"team": "someone-else"}},
			"spec": map[string]any{
				"parentRefs": []any{map[string]any{"name": "theirs", "namespace": "infra"}},
				"rules":      []any{map[string]any{"backendRefs": []any{map[string]any{"name": "theirs", "port": int64(80), "weight": weight}}}},
			},
		}}
		created, err := dyn.Resource(routeGVR).Namespace(ns).Create(ctx, theirs, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create the foreign httproute: %v", err)
		}
		untouched := func(when string) {
			t.Helper()
			now := getRoute(t, dyn, ns, "web-prod")
			if now.GetResourceVersion() != created.GetResourceVersion() || hasManager(now.GetManagedFields(), k8sdriver.FieldManager) {
				t.Errorf("%s: the foreign httproute changed (resourceVersion %s, was %s; managers %v)", when, now.GetResourceVersion(), created.GetResourceVersion(), now.GetManagedFields())
			}
		}
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
		wantNotOwned(t, "check", p.Check(ctx, tg, workload(1), opts(1)))
		deps, err := suite.admin.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: driver.LabelApp + "=web"})
		if err != nil || len(deps.Items) != 0 {
			t.Errorf("deployments written despite the clash: %d (%v)", len(deps.Items), err)
		}
		if err := p.Delete(ctx, tg); err != nil {
			t.Errorf("delete: %v", err)
		}
		untouched("after a refused rolling and delete")

		// Without a Gateway the name is not the deployer's to use: deploying
		// works and leaves their route alone, and so does deleting.
		tg.Gateway = ""
		if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
			t.Fatalf("rolling without a gateway: %v", err)
		}
		untouched("after rolling without a gateway")
		if err := p.Delete(ctx, tg); err != nil {
			t.Fatalf("delete: %v", err)
		}
		untouched("after delete without a gateway")
	})

	t.Run("slot service", func(t *testing.T) {
		tg := k8sdriver.Target{App: "api", Environment: "prod", Namespace: ns, Gateway: testGateway}
		svc := foreignService(t, ns, "api-prod-green")
		wantNotOwned(t, "rolling", p.Rolling(ctx, tg, workload(1), opts(1)))
		if err := p.Delete(ctx, tg); err != nil {
			t.Errorf("delete: %v", err)
		}
		now, err := suite.admin.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
		if err != nil || hasManager(now.ManagedFields, k8sdriver.FieldManager) {
			t.Errorf("the foreign service changed or gone: %v", err)
		}
	})
}

func TestGatewayRemovedDropsTheRoute(t *testing.T) {
	t.Parallel()
	dyn := installGatewayAPI(t)
	p := newPlatform(t)
	tg := newTarget(t, p, "gwoff")
	tg.Gateway = testGateway
	ns := tg.App + "-" + tg.Environment
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
		t.Fatalf("deploy v1 with a gateway: %v", err)
	}
	waitStatus(t, p, tg, 30*time.Second, "route in status", func(st k8sdriver.Status) bool {
		return st.Route != nil && st.Route.Weights[k8sdriver.SlotBlue] == 100
	})
	tg.Gateway = ""
	if err := p.Rolling(ctx, tg, workload(2), opts(1)); err != nil {
		t.Fatalf("deploy v2 without a gateway: %v", err)
	}
	if _, err := dyn.Resource(routeGVR).Namespace(ns).Get(ctx, tg.App, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("httproute after the gateway was removed: %v, want NotFound", err)
	}
	svcs, err := suite.admin.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(svcs.Items) != 1 || svcs.Items[0].Name != tg.App {
		t.Errorf("services after the gateway was removed: %d (%v), want only %s", len(svcs.Items), err, tg.App)
	}
	if st := statusOf(t, p, tg); st.Route != nil {
		t.Errorf("status route = %+v, want none", st.Route)
	}
}

func foreignService(t *testing.T, ns, name string) string {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"team": "someone-else"}},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "theirs"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if _, err := suite.admin.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create foreign service %s/%s: %v", ns, name, err)
	}
	return name
}

// TestWithoutHTTPRouteRBAC runs the platform as a user that may do
// everything the deployer needs except touch HTTPRoutes, on a cluster that
// serves them: without the Gateway option nothing changes (deploy and
// delete work), with it operations fail with the API's Forbidden, and
// Status says so instead of waiting for its informer.
func TestWithoutHTTPRouteRBAC(t *testing.T) {
	t.Parallel()
	installGatewayAPI(t)
	ctx := ctxFor(t, 90*time.Second)
	user := "noroutes-" + suite.run
	all := []string{"get", "list", "watch", "create", "patch", "delete"}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "opsuite-test-" + user},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "services"}, Verbs: all},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: all},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := suite.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role: %v", err)
	}
	if _, err := suite.admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role binding: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = suite.admin.RbacV1().ClusterRoleBindings().Delete(cctx, binding.Name, metav1.DeleteOptions{})
		_ = suite.admin.RbacV1().ClusterRoles().Delete(cctx, role.Name, metav1.DeleteOptions{})
	})
	rc := rest.CopyConfig(suite.rc)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user}
	p, err := k8sdriver.NewForConfig(ctx, rc, k8sdriver.Config{}, testLogger(t))
	if err != nil {
		t.Fatalf("new platform as %s: %v", user, err)
	}
	t.Cleanup(func() { p.Close() })
	tg := newTarget(t, p, "norbac") // its cleanup deletes as the user too

	if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
		t.Fatalf("rolling without a gateway, without httproute rights: %v", err)
	}
	if st := statusOf(t, p, tg); st.Route != nil || len(st.Pods) != 1 {
		t.Errorf("status without a gateway: route %+v, %d pods", st.Route, len(st.Pods))
	}
	gw := tg
	gw.Gateway = testGateway
	forbidden := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "forbidden") || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with a gateway, without httproute rights = %v, want the API's Forbidden", what, err)
		}
	}
	_, err = p.Status(ctx, gw)
	forbidden("status", err)
	forbidden("rolling", p.Rolling(ctx, gw, workload(2), opts(1)))
	forbidden("canary", p.Canary(ctx, gw, workload(2), 50, opts(1)))
	if st := statusOf(t, p, tg); len(st.Deployments) != 1 || st.Deployments[0].Revision != 1 {
		t.Errorf("a refused operation changed the deployments: %s", describe(st))
	}
}
