package kubernetes_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

func TestFromSpec(t *testing.T) {
	spec := &deployerv1.ApplicationSpec{
		Workload:         &deployerv1.ApplicationSpec_Image{Image: "registry.example/shop:v3"},
		Env:              []*deployerv1.EnvVar{{Name: "MODE", Value: "prod"}},
		Ports:            []*deployerv1.Port{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: deployerv1.PortProtocol_PORT_PROTOCOL_UDP}},
		Resources:        &deployerv1.Resources{Cpus: 0.25, MemoryBytes: 128 << 20},
		HealthCheck:      &deployerv1.HealthCheck{Probe: &deployerv1.HealthCheck_Http{Http: &deployerv1.HttpProbe{Path: "/ready", Port: 8080}}, Interval: durationpb.New(2 * time.Second)},
		ProgressDeadline: durationpb.New(45 * time.Second),
		Strategy: &deployerv1.Strategy{Kind: &deployerv1.Strategy_Rolling{Rolling: &deployerv1.RollingStrategy{
			MaxSurge:       &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Percent{Percent: 50}},
			MaxUnavailable: &deployerv1.ReplicaQuantity{Value: &deployerv1.ReplicaQuantity_Count{Count: 0}},
		}}},
	}
	w := k8sdriver.WorkloadFor(3, spec)
	if w.Image != "registry.example/shop:v3" || w.Env["MODE"] != "prod" || len(w.Ports) != 2 || w.Ports[1].Protocol != "udp" {
		t.Errorf("workload = %+v", w)
	}
	if w.Readiness == nil || w.Readiness.HTTPPath != "/ready" || w.Readiness.Port != "8080" || w.Readiness.Period != 2*time.Second {
		t.Errorf("readiness = %+v", w.Readiness)
	}
	o := k8sdriver.OptionsFor(spec, 4)
	if o.Replicas != 4 || o.MaxSurge.String() != "50%" || o.MaxUnavailable.IntValue() != 0 || o.ProgressDeadline != 45*time.Second {
		t.Errorf("options = %+v surge %v unavailable %v", o, o.MaxSurge, o.MaxUnavailable)
	}
	tg := k8sdriver.TargetFor("shop", "prod", &deployerv1.KubernetesOptions{ServiceType: deployerv1.ServiceType_SERVICE_TYPE_LOAD_BALANCER, Namespace: "apps", Gateway: "infra/public"})
	if tg.ServiceType != k8sdriver.ServiceLoadBalancer || tg.Namespace != "apps" || tg.Gateway != "infra/public" {
		t.Errorf("target = %+v", tg)
	}
	if d := k8sdriver.TargetFor("shop", "prod", nil); d.ServiceType != k8sdriver.ServiceClusterIP || d.Namespace != "" || d.Gateway != "" {
		t.Errorf("default target = %+v", d)
	}
}
