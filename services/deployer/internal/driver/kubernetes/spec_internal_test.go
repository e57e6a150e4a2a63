package kubernetes

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

func goodWorkload() Workload {
	return Workload{Revision: 1, Image: "registry.example/shop:v1", Ports: []driver.Port{{Name: "http", ContainerPort: 8080}}}
}

func TestValidationNamesTheField(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	zero := intstr.FromInt32(0)
	tests := []struct {
		name  string
		t     Target
		w     func(*Workload)
		o     Options
		field string
	}{
		{"upper-case app", Target{App: "Shop", Environment: "prod"}, nil, Options{}, "application"},
		{"empty environment", Target{App: "shop"}, nil, Options{}, "environment"},
		{"bad namespace", Target{App: "shop", Environment: "prod", Namespace: "team_a"}, nil, Options{}, "namespace"},
		{"names too long", Target{App: strings.Repeat("a", 45), Environment: "production"}, nil, Options{}, "application"},
		{"service type", Target{App: "shop", Environment: "prod", ServiceType: "ExternalName"}, nil, Options{}, "service_type"},
		{"node selector", Target{App: "shop", Environment: "prod", NodeSelector: map[string]string{"bad key!": "x"}}, nil, Options{}, "node_selector"},
		{"image with space", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Image = "shop v1" }, Options{}, "image"},
		{"image upper case", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Image = "Registry/Shop:v1" }, Options{}, "image"},
		{"no image", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Image = "" }, Options{}, "image"},
		{"port", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Ports[0].ContainerPort = 70000 }, Options{}, "ports[0].container_port"},
		{"port name", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Ports[0].Name = "HTTP_PORT" }, Options{}, "ports[0].name"},
		{"protocol", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Ports[0].Protocol = "sctp" }, Options{}, "ports[0].protocol"},
		{"env name", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Env = map[string]string{"1BAD=": "x"} }, Options{}, "env"},
		{"revision", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Revision = 0 }, Options{}, "revision"},
		{"probe port", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Readiness = &Probe{HTTPPath: "/", Port: "admin"} }, Options{}, "readiness.port"},
		{"cpus", Target{App: "shop", Environment: "prod"}, func(w *Workload) { w.Resources.CPUs = -1 }, Options{}, "resources.cpus"},
		{"replicas", Target{App: "shop", Environment: "prod"}, nil, Options{Replicas: -1}, "replicas"},
		{"surge", Target{App: "shop", Environment: "prod"}, nil, Options{MaxSurge: pct("lots")}, "max_surge"},
		{"both zero", Target{App: "shop", Environment: "prod"}, nil, Options{MaxSurge: &zero, MaxUnavailable: &zero}, "max_unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := goodWorkload()
			if tc.w != nil {
				tc.w(&w)
			}
			v := validation.New("test")
			validateTarget(v, tc.t)
			validateWorkload(v, &w)
			validateOptions(v, tc.o)
			err := invalid(v)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, driver.ErrInvalidSpec) {
				t.Errorf("%v does not wrap driver.ErrInvalidSpec", err)
			}
			var ve *validation.Error
			if !errors.As(err, &ve) || ve.Fields[0].Field != tc.field {
				t.Errorf("fields = %v, want %s first", ve, tc.field)
			}
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
				t.Errorf("code = %s, want InvalidArgument", st.Code())
			}
		})
	}
	v := validation.New("ok")
	validateTarget(v, Target{App: "shop", Environment: "prod", ServiceType: ServiceLoadBalancer})
	w := goodWorkload()
	w.Readiness = &Probe{HTTPPath: "/healthz", Port: "http"}
	validateWorkload(v, &w)
	if err := invalid(v); err != nil {
		t.Errorf("valid input: %v", err)
	}
}

func TestNotOwnedIsFailedPrecondition(t *testing.T) {
	err := error(&notOwnedError{"deployment", "ns", "shop-blue", "exists without the deployer's labels"})
	if !errors.Is(err, ErrNotOwned) {
		t.Errorf("%v does not wrap ErrNotOwned", err)
	}
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition {
		t.Errorf("code = %s, want FailedPrecondition", st.Code())
	}
}

func TestRolloutState(t *testing.T) {
	now := time.Now()
	dep := func(gen, observed int64, want, updated, total, available int32, cond *appsv1.DeploymentCondition) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Generation: gen}}
		d.Spec.Replicas = &want
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: observed, UpdatedReplicas: updated, Replicas: total, AvailableReplicas: available}
		if cond != nil {
			d.Status.Conditions = []appsv1.DeploymentCondition{*cond}
		}
		return d
	}
	exceeded := func(at time.Time) *appsv1.DeploymentCondition {
		return &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
			Reason: "ProgressDeadlineExceeded", LastUpdateTime: metav1.NewTime(at)}
	}
	tests := []struct {
		name    string
		d       *appsv1.Deployment
		done    bool
		failing bool
	}{
		{"not observed", dep(2, 1, 3, 3, 3, 3, nil), false, false},
		{"complete", dep(2, 2, 3, 3, 3, 3, nil), true, false},
		{"old pods left", dep(2, 2, 3, 3, 4, 3, nil), false, false},
		{"not available", dep(2, 2, 3, 3, 3, 2, nil), false, false},
		{"deadline now", dep(2, 2, 3, 1, 4, 3, exceeded(now.Add(time.Second))), false, true},
		{"stale deadline", dep(2, 2, 3, 1, 4, 3, exceeded(now.Add(-time.Minute))), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done, err := rolloutState(tc.d, now)
			if done != tc.done || errors.Is(err, ErrProgressDeadline) != tc.failing {
				t.Errorf("rolloutState = %v, %v; want done %v, failing %v", done, err, tc.done, tc.failing)
			}
		})
	}
}

func TestNotReadyReason(t *testing.T) {
	del := metav1.Now()
	tests := []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &del}}, "Terminating"},
		{"unschedulable", corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes are available: 1 Insufficient cpu."}}}},
			"Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."},
		{"image pull", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}}}, "ImagePullBackOff"},
		{"crashed", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2}}}}}}, "container terminated with exit code 2"},
		{"probe", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}, "container app running but not passing its readiness probe"},
		{"unscheduled", corev1.Pod{}, "Pending: waiting to be scheduled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := podStatus(&tc.pod)
			if ps.Ready || ps.Reason != tc.want {
				t.Errorf("reason = %q (ready %v), want %q", ps.Reason, ps.Ready, tc.want)
			}
		})
	}
}

func TestDeploymentApplyIsTyped(t *testing.T) {
	p := &Platform{histKeep: 10}
	tg := Target{App: "shop", Environment: "prod", PodAnnotations: map[string]string{"a": "b"}, NodeSelector: map[string]string{"disk": "ssd"}}
	w := goodWorkload()
	w.Resources = Resources{CPUs: 0.5, MemoryBytes: 64 << 20}
	w.Env = map[string]string{"B": "2", "A": "1"}
	cfg := p.deploymentApply(tg, SlotGreen, &w, 3, Options{ProgressDeadline: 1500 * time.Millisecond})
	if *cfg.Name != "shop-green" || *cfg.Namespace != "shop-prod" {
		t.Errorf("name %s/%s", *cfg.Namespace, *cfg.Name)
	}
	if *cfg.Spec.ProgressDeadlineSeconds != 2 || *cfg.Spec.Replicas != 3 {
		t.Errorf("deadline %d replicas %d", *cfg.Spec.ProgressDeadlineSeconds, *cfg.Spec.Replicas)
	}
	c := cfg.Spec.Template.Spec.Containers[0]
	if *c.Env[0].Name != "A" || c.Resources.Limits.Cpu().String() != "500m" || c.Resources.Limits.Memory().String() != "64Mi" {
		t.Errorf("container env %v resources %v", c.Env, c.Resources.Limits)
	}
	if cfg.Spec.Selector.MatchLabels[LabelSlot] != SlotGreen || cfg.Spec.Template.Labels[driver.LabelRevision] != "1" {
		t.Errorf("labels: selector %v template %v", cfg.Spec.Selector.MatchLabels, cfg.Spec.Template.Labels)
	}
	if _, ok := cfg.Spec.Selector.MatchLabels[driver.LabelRevision]; ok {
		t.Error("the selector must not include the revision: it is immutable")
	}
}

// FuzzValidate feeds arbitrary names and images to the validation: it
// must never panic, and whatever it accepts must be usable as Kubernetes
// names (the derived namespace and Deployment names).
func FuzzValidate(f *testing.F) {
	f.Add("shop", "prod", "", "registry.example/shop:v1", "http", 8080)
	f.Add("Shop", "", "ns_1", "shop v1", "HTTP", -1)
	f.Add(strings.Repeat("a", 70), "x", "a.b", "@sha256:", "", 0)
	f.Fuzz(func(t *testing.T, app, env, ns, image, port string, num int) {
		tg := Target{App: app, Environment: env, Namespace: ns}
		w := Workload{Revision: 1, Image: image, Ports: []driver.Port{{Name: port, ContainerPort: num}}}
		v := validation.New("fuzz")
		validateTarget(v, tg)
		validateWorkload(v, &w)
		if invalid(v) != nil {
			return
		}
		if len(tg.namespace()) > 63 || len(tg.deploymentName(SlotGreen)) > 47 {
			t.Fatalf("accepted %q/%q: namespace %q, deployment %q", app, env, tg.namespace(), tg.deploymentName(SlotGreen))
		}
	})
}
