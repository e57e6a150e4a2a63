package deployer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

// The harness (scripts/kube-harness, make test-kube) names its kubeconfig
// here; without it these tests skip, unless OPSUITE_REQUIRE_KUBE is 1.
const (
	envKubeconfig  = "OPSUITE_KUBECONFIG"
	envRequireKube = "OPSUITE_REQUIRE_KUBE"
)

// kubeSuite is the deployer with a kubernetes driver on the harness, and an
// admin client that checks the cluster behind the deployer's back.
func kubeSuite(t *testing.T) (*suite, k8s.Interface) {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	path := os.Getenv(envKubeconfig)
	if path == "" {
		if os.Getenv(envRequireKube) == "1" {
			t.Fatalf("%s=1 but %s is not set", envRequireKube, envKubeconfig)
		}
		t.Skipf("no Kubernetes harness: %s is not set (make test-kube starts one)", envKubeconfig)
	}
	p, err := kubernetes.New(t.Context(), kubernetes.Config{Kubeconfig: path}, nil)
	if err != nil {
		t.Fatalf("kubernetes driver on the harness %s: %v", path, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	rc, err := kubernetes.RESTConfig(kubernetes.Config{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := k8s.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return newSuiteOn(t, nil, p), admin
}

func runID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kubeSpec is the demo image at a revision on the kubernetes driver: kwok
// never pulls the image; the scheduler and kwok's stages run the pods and
// make them ready. cpus above what the fake node has keeps pods Pending.
func kubeSpec(version string, replicas int32, strategy *deployerv1.Strategy) *deployerv1.ApplicationSpec {
	return &deployerv1.ApplicationSpec{
		Workload: &deployerv1.ApplicationSpec_Image{Image: "registry.example/opsuite/demo:" + version},
		Env:      []*deployerv1.EnvVar{{Name: "VERSION", Value: version}},
		Ports:    []*deployerv1.Port{{Name: "http", ContainerPort: 8080}},
		Replicas: replicas,
		HealthCheck: &deployerv1.HealthCheck{
			Probe:    &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/healthz", Port: 8080}},
			Interval: durationpb.New(time.Second),
		},
		Driver:           &deployerv1.DriverConfig{Driver: &deployerv1.DriverConfig_Kubernetes{Kubernetes: &deployerv1.KubernetesOptions{}}},
		ProgressDeadline: durationpb.New(60 * time.Second),
		RollbackPolicy:   &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)},
		Strategy:         strategy,
	}
}

func (s *suite) deployApp(t *testing.T, app string, spec *deployerv1.ApplicationSpec) *deployerv1.Rollout {
	t.Helper()
	resp, err := s.client.Deploy(t.Context(), &deployerv1.DeployRequest{Name: app, Source: &deployerv1.DeployRequest_Spec{Spec: spec}, Reason: "test"})
	if err != nil {
		t.Fatalf("deploy %s: %v", spec.GetImage(), err)
	}
	return resp.GetRollout()
}

func (s *suite) waitKube(t *testing.T, app, id string, d time.Duration, want ...deployerv1.RolloutPhase) *deployerv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := s.client.GetRollout(t.Context(), &deployerv1.GetRolloutRequest{Application: app, Id: id})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetRollout()
		for _, p := range want {
			if r.GetPhase() == p {
				return r
			}
		}
		switch r.GetPhase() {
		case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
			t.Fatalf("rollout %s ended %s (%s), want %v", id, r.GetPhase(), r.GetMessage(), want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s still %s at step %d (%s) after %s, want %v", id, r.GetPhase(), r.GetCurrentStepIndex(), r.GetMessage(), d, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podsByRevision counts the environment's ready pods per revision, as the
// deployer reports them.
func (s *suite) podsByRevision(t *testing.T, app string) (ready, all map[uint32]int) {
	t.Helper()
	resp, err := s.client.ListReplicas(t.Context(), &deployerv1.ListReplicasRequest{Application: app})
	if err != nil {
		t.Fatal(err)
	}
	ready, all = map[uint32]int{}, map[uint32]int{}
	for _, r := range resp.GetReplicas() {
		if r.GetDriver() != deployerv1.DriverKind_DRIVER_KIND_KUBERNETES || r.GetKubernetes().GetPodName() == "" {
			t.Fatalf("replica %s is not a pod: %v", r.GetId(), r)
		}
		all[r.GetRevision()]++
		if r.GetKubernetes().GetReady() {
			ready[r.GetRevision()]++
		}
	}
	return ready, all
}

func waitPods(t *testing.T, s *suite, app string, d time.Duration, want map[uint32]int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ready, all := s.podsByRevision(t, app)
		if equalCounts(ready, want) && equalCounts(all, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods of %s: ready %v, all %v; want %v ready and nothing else", app, ready, all, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func equalCounts(a, b map[uint32]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func serviceOf(t *testing.T, admin k8s.Interface, ns, name string) *corev1.Service {
	t.Helper()
	svc, err := admin.CoreV1().Services(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("service %s/%s: %v", ns, name, err)
	}
	return svc
}

func deploymentsOf(t *testing.T, admin k8s.Interface, ns string) map[string]*appsv1.Deployment {
	t.Helper()
	list, err := admin.AppsV1().Deployments(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*appsv1.Deployment{}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out
}

// TestDeployerOnKubernetes drives every strategy through the deployer's
// API onto the harness cluster: a first deploy, rolling v1→v2 in one step
// handed to the Deployment, blue-green v2→v3 with a selector switch on
// promotion, canary v3→v4 by replica ratio, a v5 whose pods can never be
// ready rolled back on its progress deadline, scale, and delete leaving
// nothing behind.
func TestDeployerOnKubernetes(t *testing.T) {
	s, admin := kubeSuite(t)
	ctx := t.Context()
	app := "kshop-" + runID()
	ns := app + "-" + "default"
	if _, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{
		Name: app, Spec: kubeSpec("v1", 3, nil),
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.client.DeleteApplication(context.Background(), &deployerv1.DeleteApplicationRequest{Name: app, Force: true})
	})

	// First deploy.
	r := s.deployApp(t, app, kubeSpec("v1", 3, nil))
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED)
	waitPods(t, s, app, time.Minute, map[uint32]int{1: 3})
	got, err := s.client.GetApplication(ctx, &deployerv1.GetApplicationRequest{Name: app})
	if err != nil {
		t.Fatal(err)
	}
	st := got.GetApplication().GetEnvironments()[0].GetStatus()
	if st.GetDriver() != deployerv1.DriverKind_DRIVER_KIND_KUBERNETES || st.GetCurrentRevision() != 1 || st.GetEndpoint() != "http://"+app+"."+ns+".svc:8080" {
		t.Fatalf("environment after v1: driver %s, revision %d, endpoint %q", st.GetDriver(), st.GetCurrentRevision(), st.GetEndpoint())
	}

	// Rolling v1→v2: one step, the Deployment rolls with maxUnavailable 0.
	rolling := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{
		MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 1}},
		MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
	}}}
	r = s.deployApp(t, app, kubeSpec("v2", 3, rolling))
	if n := len(r.GetSteps()); n != 1 {
		t.Errorf("rolling on Kubernetes planned %d steps, want 1 handed to the Deployment: %v", n, r.GetSteps())
	}
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED)
	waitPods(t, s, app, time.Minute, map[uint32]int{2: 3})
	deps := deploymentsOf(t, admin, ns)
	if d := deps[app+"-blue"]; d == nil || d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Fatalf("blue deployment after rolling: %+v", d)
	}

	// Blue-green v2→v3: green previewed at full size, the Service switched
	// on promotion, blue retired.
	bg := &deployerv1.Strategy{Kind: &deployerv1.Strategy_BlueGreen{BlueGreen: &deployerv1.BlueGreenStrategy{}}}
	r = s.deployApp(t, app, kubeSpec("v3", 3, bg))
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED)
	waitPods(t, s, app, time.Minute, map[uint32]int{2: 3, 3: 3})
	if sel := serviceOf(t, admin, ns, app).Spec.Selector[kubernetes.LabelSlot]; sel != kubernetes.SlotBlue {
		t.Fatalf("service selects slot %q before promotion, want blue", sel)
	}
	if _, err := s.client.Promote(ctx, &deployerv1.PromoteRequest{Name: app, Environment: "default"}); err != nil {
		t.Fatal(err)
	}
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED)
	if sel := serviceOf(t, admin, ns, app).Spec.Selector[kubernetes.LabelSlot]; sel != kubernetes.SlotGreen {
		t.Fatalf("service selects slot %q after promotion, want green", sel)
	}
	waitPods(t, s, app, time.Minute, map[uint32]int{3: 3})

	// Canary v3→v4 by replica ratio: 1 of 3 pods at 33%, the Service
	// selecting both Deployments.
	canary := &deployerv1.Strategy{Kind: &deployerv1.Strategy_Canary{Canary: &deployerv1.CanaryStrategy{Steps: []*deployerv1.CanaryStep{
		{Step: &deployerv1.CanaryStep_SetWeight{SetWeight: &deployerv1.SetWeightStep{Weight: 33}}},
		{Step: &deployerv1.CanaryStep_Pause{Pause: &deployerv1.PauseStep{}}},
	}}}}
	r = s.deployApp(t, app, kubeSpec("v4", 3, canary))
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED)
	waitPods(t, s, app, time.Minute, map[uint32]int{3: 2, 4: 1})
	if _, narrowed := serviceOf(t, admin, ns, app).Spec.Selector[kubernetes.LabelSlot]; narrowed {
		t.Fatal("service selects one slot during the canary, want both")
	}
	if _, err := s.client.Promote(ctx, &deployerv1.PromoteRequest{Name: app, Environment: "default"}); err != nil {
		t.Fatal(err)
	}
	s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED)
	waitPods(t, s, app, time.Minute, map[uint32]int{4: 3})

	// v5 can never be ready (more CPU than any node has): rolled back on
	// the Deployment's progress deadline, v4 serving throughout.
	broken := kubeSpec("v5", 3, rolling)
	broken.Resources = &deployerv1.Resources{Cpus: 512}
	broken.ProgressDeadline = durationpb.New(5 * time.Second)
	r = s.deployApp(t, app, broken)
	r = s.waitKube(t, app, r.GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK)
	if r.GetRollbackTrigger() != deployerv1.RollbackTrigger_ROLLBACK_TRIGGER_DEADLINE {
		t.Errorf("v5 rolled back by %s (%s), want the deadline", r.GetRollbackTrigger(), r.GetMessage())
	}
	t.Logf("v5: %s", r.GetMessage())
	waitPods(t, s, app, time.Minute, map[uint32]int{4: 3})

	// Scale.
	if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: app, Environment: "default", Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	waitPods(t, s, app, time.Minute, map[uint32]int{4: 2})

	// Restart replaces every pod, keeping the revision; a later scale
	// keeps the restarted pods.
	podNames := func() []string {
		resp, err := s.client.ListReplicas(ctx, &deployerv1.ListReplicasRequest{Application: app})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range resp.GetReplicas() {
			names = append(names, r.GetKubernetes().GetPodName())
		}
		return names
	}
	before := podNames()
	rs, err := s.client.Deploy(ctx, &deployerv1.DeployRequest{Name: app, Restart: true})
	if err != nil {
		t.Fatal(err)
	}
	s.waitKube(t, app, rs.GetRollout().GetId(), 2*time.Minute, deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED)
	waitPods(t, s, app, time.Minute, map[uint32]int{4: 2})
	restarted := podNames()
	for _, n := range restarted {
		if slices.Contains(before, n) {
			t.Fatalf("pod %s survived the restart (before %v, after %v)", n, before, restarted)
		}
	}
	if _, err := s.client.Scale(ctx, &deployerv1.ScaleRequest{Name: app, Environment: "default", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	waitPods(t, s, app, time.Minute, map[uint32]int{4: 3})
	for _, n := range restarted {
		if !slices.Contains(podNames(), n) {
			t.Fatalf("scaling after the restart replaced pod %s", n)
		}
	}

	// Delete leaves nothing: the namespace the deployer created goes too.
	if _, err := s.client.DeleteApplication(ctx, &deployerv1.DeleteApplicationRequest{Name: app}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s after delete: %v, want NotFound", ns, err)
	}
}

// TestDeployerOnKubernetesRefusesBadInputAndForeignObjects: bad names are
// InvalidArgument before anything is stored; a Service the deployer does
// not own where it would put its own is FailedPrecondition, and is left
// exactly as it was.
func TestDeployerOnKubernetesRefusesBadInputAndForeignObjects(t *testing.T) {
	s, admin := kubeSuite(t)
	ctx := t.Context()
	bad := kubeSpec("v1", 1, nil)
	bad.GetDriver().GetKubernetes().Namespace = "Not_A_Namespace"
	_, err := s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "bad-" + runID(), Spec: bad}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid namespace: %v, want InvalidArgument", err)
	}
	other := kubeSpec("v1", 1, nil)
	other.GetDriver().GetKubernetes().Context = "some-other-cluster"
	_, err = s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: "ctx-" + runID(), Spec: other}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "some-other-cluster") {
		t.Fatalf("a context the deployer does not use: %v, want InvalidArgument naming it", err)
	}

	// A namespace of the user's with a Service of theirs named as the
	// deployer would name its own.
	app := "clash-" + runID()
	ns := "users-" + runID()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	foreign := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: app + "-default", Labels: map[string]string{"owner": "someone-else"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "theirs"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}
	created, err := admin.CoreV1().Services(ns).Create(ctx, foreign, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := kubeSpec("v1", 1, nil)
	spec.GetDriver().GetKubernetes().Namespace = ns
	_, err = s.client.CreateApplication(ctx, &deployerv1.CreateApplicationRequest{Application: &deployerv1.Application{Name: app, Spec: spec}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("create beside a foreign service: %v, want FailedPrecondition", err)
	}
	t.Logf("refused: %v", err)
	after := serviceOf(t, admin, ns, app+"-default")
	if after.ResourceVersion != created.ResourceVersion {
		t.Fatalf("the foreign service changed: resourceVersion %s → %s", created.ResourceVersion, after.ResourceVersion)
	}
	deps := deploymentsOf(t, admin, ns)
	if len(deps) != 0 {
		t.Fatalf("deployments created in the user's namespace: %v", deps)
	}
}
