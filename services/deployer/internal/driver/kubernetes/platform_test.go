package kubernetes_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

func opts(replicas int32) k8sdriver.Options {
	surge, unavailable := intstr.FromInt32(1), intstr.FromInt32(0)
	return k8sdriver.Options{Replicas: replicas, MaxSurge: &surge, MaxUnavailable: &unavailable, ProgressDeadline: 30 * time.Second}
}

func TestRollingV1ToV2KeepsEveryReplicaReady(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := newTarget(t, p, "rolling")
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(3)); err != nil {
		t.Fatalf("rolling v1: %v", err)
	}
	rw := watchReady(t, tg, 3)
	if err := p.Rolling(ctx, tg, workload(2), opts(3)); err != nil {
		t.Fatalf("rolling v2: %v", err)
	}
	st := waitStatus(t, p, tg, 30*time.Second, "only v2 pods", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return len(all) == 1 && ready[2] == 3
	})
	if got, armed := rw.min(); !armed || got < 3 {
		t.Errorf("ready pods fell to %d during the rollout (armed=%v); maxUnavailable 0 allows no fewer than 3", got, armed)
	}
	if !slices.Equal(st.ServingRevisions, []int64{2}) {
		t.Errorf("serving revisions = %v, want [2]", st.ServingRevisions)
	}
	if st.Service == nil || st.Service.Selector[k8sdriver.LabelSlot] != k8sdriver.SlotBlue {
		t.Errorf("service = %+v, want selector on the blue slot", st.Service)
	}
	if len(st.Deployments) != 1 || st.Deployments[0].Revision != 2 || st.Deployments[0].Progress != "NewReplicaSetAvailable" {
		t.Errorf("deployments = %+v, want one at revision 2, NewReplicaSetAvailable", st.Deployments)
	}
	waitEndpoints(t, tg, st.Service.Name, []int64{2})
}

func TestFailingRevisionRolledBackOnProgressDeadline(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := newTarget(t, p, "failing")
	ctx := ctxFor(t, 120*time.Second)

	for _, rev := range []int64{1, 2} {
		if err := p.Rolling(ctx, tg, workload(rev), opts(2)); err != nil {
			t.Fatalf("rolling v%d: %v", rev, err)
		}
	}
	o := opts(2)
	o.ProgressDeadline = 3 * time.Second
	start := time.Now()
	err := p.Rolling(ctx, tg, failing(3), o)
	if !errors.Is(err, k8sdriver.ErrProgressDeadline) {
		t.Fatalf("rolling v3 = %v, want ErrProgressDeadline", err)
	}
	t.Logf("v3 failed after %s: %v", time.Since(start).Round(time.Millisecond), err)

	st := statusOf(t, p, tg)
	all, ready := podsByRevision(st)
	if ready[2] != 2 || ready[3] != 0 || all[3] == 0 {
		t.Fatalf("after the failed rollout: all=%v ready=%v, want 2 ready v2 pods and unready v3 pods; %s", all, ready, describe(st))
	}
	for _, pod := range st.Pods {
		if pod.Revision == 3 && (pod.Ready || pod.Phase != "Pending" || pod.Reason == "") {
			t.Errorf("v3 pod %s: phase %s ready %v reason %q, want Pending, not ready, with a reason", pod.Name, pod.Phase, pod.Ready, pod.Reason)
		}
	}

	if err := p.Rollback(ctx, tg, 2, opts(2)); err != nil {
		t.Fatalf("rollback to 2: %v", err)
	}
	st = waitStatus(t, p, tg, 30*time.Second, "v3 pods gone", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return len(all) == 1 && ready[2] == 2
	})
	if d := st.Deployments[0]; d.Revision != 2 || d.Progress == "ProgressDeadlineExceeded" {
		t.Errorf("deployment after rollback: %+v", d)
	}
	// The rollback reused the kept ReplicaSet of revision 2: no new one.
	rss, err := suite.admin.AppsV1().ReplicaSets(st.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: driver.LabelRevision + "=2"})
	if err != nil || len(rss.Items) != 1 {
		t.Errorf("replicasets of revision 2: %d (%v), want the one kept", len(rss.Items), err)
	}
	if err := p.Rollback(ctx, tg, 7, opts(2)); !errors.Is(err, k8sdriver.ErrNoRevision) {
		t.Errorf("rollback to a revision never deployed = %v, want ErrNoRevision", err)
	}
}

func TestBlueGreenSwitchesTheServiceSelector(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := newTarget(t, p, "bluegreen")
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(2)); err != nil {
		t.Fatalf("deploy v1: %v", err)
	}
	if err := p.Preview(ctx, tg, workload(2), opts(2)); err != nil {
		t.Fatalf("preview v2: %v", err)
	}
	st := statusOf(t, p, tg)
	all, ready := podsByRevision(st)
	if ready[1] != 2 || ready[2] != 2 || !slices.Equal(st.ServingRevisions, []int64{1}) {
		t.Fatalf("during preview: all=%v ready=%v serving=%v, want both revisions up and only v1 served", all, ready, st.ServingRevisions)
	}
	waitEndpoints(t, tg, st.Service.Name, []int64{1})

	if err := p.Switch(ctx, tg, 2); err != nil {
		t.Fatalf("switch to 2: %v", err)
	}
	st = statusOf(t, p, tg)
	_ = waitStatus(t, p, tg, 10*time.Second, "service on green", func(st k8sdriver.Status) bool {
		return st.Service != nil && st.Service.ActiveSlot == k8sdriver.SlotGreen && slices.Equal(st.ServingRevisions, []int64{2})
	})
	waitEndpoints(t, tg, st.Service.Name, []int64{2})
	if _, ready := podsByRevision(st); ready[1] != 2 {
		t.Errorf("blue slot after the switch: %d ready, want 2 kept for an instant switch back", ready[1])
	}

	// Instant switch back, then forward again, then retire blue.
	if err := p.Switch(ctx, tg, 1); err != nil {
		t.Fatalf("switch back to 1: %v", err)
	}
	waitStatus(t, p, tg, 10*time.Second, "service back on blue", func(st k8sdriver.Status) bool {
		return slices.Equal(st.ServingRevisions, []int64{1})
	})
	if err := p.Switch(ctx, tg, 2); err != nil {
		t.Fatalf("switch to 2 again: %v", err)
	}
	if err := p.Retire(ctx, tg); err != nil {
		t.Fatalf("retire: %v", err)
	}
	waitStatus(t, p, tg, 30*time.Second, "blue scaled to zero", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return all[1] == 0 && ready[2] == 2
	})
	if err := p.Switch(ctx, tg, 1); !errors.Is(err, k8sdriver.ErrNotReady) {
		t.Errorf("switch to a retired slot = %v, want ErrNotReady", err)
	}
	if err := p.Switch(ctx, tg, 9); !errors.Is(err, k8sdriver.ErrNoRevision) {
		t.Errorf("switch to an unknown revision = %v, want ErrNoRevision", err)
	}
}

func TestCanaryByReplicaRatio(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := newTarget(t, p, "canary")
	ctx := ctxFor(t, 120*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(4)); err != nil {
		t.Fatalf("deploy v1: %v", err)
	}
	for _, step := range []struct {
		weight           int32
		wantNew, wantOld int
		wantServing      []int64
	}{
		{25, 1, 3, []int64{1, 2}},
		{50, 2, 2, []int64{1, 2}},
		{100, 4, 0, []int64{2}},
	} {
		if err := p.Canary(ctx, tg, workload(2), step.weight, opts(4)); err != nil {
			t.Fatalf("canary at %d%%: %v", step.weight, err)
		}
		st := waitStatus(t, p, tg, 30*time.Second, "canary step settled", func(st k8sdriver.Status) bool {
			all, ready := podsByRevision(st)
			return ready[2] == step.wantNew && all[1] == step.wantOld && ready[1] == step.wantOld
		})
		if !slices.Equal(st.ServingRevisions, step.wantServing) {
			t.Errorf("weight %d: serving %v, want %v", step.weight, st.ServingRevisions, step.wantServing)
		}
		waitEndpoints(t, tg, st.Service.Name, step.wantServing)
	}

	// A canary of v3 aborted halfway: all traffic and replicas back on v2.
	if err := p.Canary(ctx, tg, workload(3), 50, opts(4)); err != nil {
		t.Fatalf("canary v3 at 50%%: %v", err)
	}
	if err := p.Abort(ctx, tg, 2, opts(4)); err != nil {
		t.Fatalf("abort: %v", err)
	}
	st := waitStatus(t, p, tg, 30*time.Second, "v3 gone after abort", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return all[3] == 0 && ready[2] == 4
	})
	if !slices.Equal(st.ServingRevisions, []int64{2}) || st.Service.Selector[k8sdriver.LabelSlot] == "" {
		t.Errorf("after abort: serving %v selector %v, want [2] on one slot", st.ServingRevisions, st.Service.Selector)
	}
}

func TestCanaryReplicas(t *testing.T) {
	for _, tc := range []struct{ total, weight, canary, stable int32 }{
		{4, 0, 0, 4}, {4, 25, 1, 3}, {4, 50, 2, 2}, {4, 100, 4, 0},
		{10, 1, 1, 9}, {10, 99, 9, 1}, {1, 50, 1, 0}, {3, 10, 1, 2}, {0, 50, 0, 0},
	} {
		c, s := k8sdriver.CanaryReplicas(tc.total, tc.weight)
		if c != tc.canary || s != tc.stable {
			t.Errorf("CanaryReplicas(%d, %d) = %d, %d; want %d, %d", tc.total, tc.weight, c, s, tc.canary, tc.stable)
		}
	}
}

func TestScaleAndPodStatus(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := newTarget(t, p, "scale")
	tg.ServiceType = k8sdriver.ServiceLoadBalancer
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(2)); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if err := p.Scale(ctx, tg, 5); err != nil {
		t.Fatalf("scale to 5: %v", err)
	}
	st := statusOf(t, p, tg)
	if len(st.Pods) != 5 {
		t.Fatalf("pods = %d, want 5: %s", len(st.Pods), describe(st))
	}
	for _, pod := range st.Pods {
		if pod.Phase != "Running" || !pod.Ready || pod.Node != "kwok-node-0" || pod.Restarts != 0 || pod.Reason != "" || pod.IP == "" || pod.Revision != 1 || pod.StartedAt.IsZero() {
			t.Errorf("pod %+v: want Running, ready, on kwok-node-0, no restarts, an IP, revision 1", pod)
		}
	}
	if st.Service == nil || st.Service.Type != "LoadBalancer" {
		t.Errorf("service = %+v, want type LoadBalancer", st.Service)
	}
	if err := p.Scale(ctx, tg, 1); err != nil {
		t.Fatalf("scale to 1: %v", err)
	}
	waitStatus(t, p, tg, 30*time.Second, "one pod", func(st k8sdriver.Status) bool {
		all, ready := podsByRevision(st)
		return all[1] == 1 && ready[1] == 1
	})
	// The Deployment keeps the rest of its spec: scaling applies only the count.
	d, err := suite.admin.AppsV1().Deployments(st.Namespace).Get(t.Context(), tg.App+"-"+k8sdriver.SlotBlue, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.Image != workload(1).Image || c.ReadinessProbe == nil || len(c.Ports) != 1 {
		t.Errorf("container after scaling: %+v", c)
	}
	nothing := k8sdriver.Target{App: "never-deployed-" + suite.run, Environment: "x"}
	if err := p.Scale(ctx, nothing, 2); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("scale of nothing = %v, want driver.ErrNotFound", err)
	}
	if _, err := suite.admin.CoreV1().Namespaces().Get(ctx, "never-deployed-"+suite.run+"-x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("scale of nothing created its namespace: %v", err)
	}
}

func TestDeleteLeavesNothing(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	tg := k8sdriver.Target{App: "delete-" + suite.run, Environment: "test"}
	ctx := ctxFor(t, 90*time.Second)

	if err := p.Rolling(ctx, tg, workload(1), opts(2)); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if err := p.Preview(ctx, tg, workload(2), opts(2)); err != nil {
		t.Fatalf("preview: %v", err)
	}
	if err := p.Delete(ctx, tg); err != nil {
		t.Fatalf("delete: %v", err)
	}
	ns := tg.App + "-" + tg.Environment
	if _, err := suite.admin.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after delete: %v, want NotFound", ns, err)
	}
	sel := metav1.ListOptions{LabelSelector: driver.LabelApp + "=" + tg.App}
	pods, _ := suite.admin.CoreV1().Pods("").List(t.Context(), sel)
	deps, _ := suite.admin.AppsV1().Deployments("").List(t.Context(), sel)
	rss, _ := suite.admin.AppsV1().ReplicaSets("").List(t.Context(), sel)
	svcs, _ := suite.admin.CoreV1().Services("").List(t.Context(), sel)
	if n := len(pods.Items) + len(deps.Items) + len(rss.Items) + len(svcs.Items); n != 0 {
		t.Errorf("%d objects left: %d pods, %d deployments, %d replicasets, %d services", n, len(pods.Items), len(deps.Items), len(rss.Items), len(svcs.Items))
	}
	if err := p.Delete(ctx, tg); err != nil {
		t.Errorf("second delete = %v, want nil", err)
	}
}
