package kubernetes

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// TargetFor is the environment env of application app with the
// application's Kubernetes options (nil means the defaults).
func TargetFor(app, env string, o *deployerv1.KubernetesOptions) Target {
	t := Target{
		App: app, Environment: env,
		Namespace:          o.GetNamespace(),
		ServiceAnnotations: o.GetServiceAnnotations(),
		PodAnnotations:     o.GetPodAnnotations(),
		NodeSelector:       o.GetNodeSelector(),
		ServiceAccount:     o.GetServiceAccount(),
		ImagePullSecrets:   o.GetImagePullSecrets(),
		Gateway:            o.GetGateway(),
	}
	switch o.GetServiceType() {
	case deployerv1.ServiceType_SERVICE_TYPE_LOAD_BALANCER:
		t.ServiceType = ServiceLoadBalancer
	case deployerv1.ServiceType_SERVICE_TYPE_NODE_PORT:
		t.ServiceType = ServiceNodePort
	default:
		t.ServiceType = ServiceClusterIP
	}
	return t
}

// WorkloadFor is revision rev of an application spec as pods run it. The
// health check's HTTP or TCP probe becomes the readiness probe (exec and
// gRPC checks stay with the health-checker).
func WorkloadFor(rev int64, s *deployerv1.ApplicationSpec) Workload {
	w := Workload{
		Revision:        rev,
		Image:           s.GetImage(),
		Command:         s.GetCommand(),
		Args:            s.GetArgs(),
		WorkingDir:      s.GetWorkingDir(),
		StopGracePeriod: s.GetStopGracePeriod().AsDuration(),
		MinReady:        s.GetMinReady().AsDuration(),
		Resources:       Resources{CPUs: s.GetResources().GetCpus(), MemoryBytes: s.GetResources().GetMemoryBytes()},
	}
	if len(s.GetEnv()) > 0 {
		w.Env = map[string]string{}
		for _, e := range s.GetEnv() {
			w.Env[e.GetName()] = e.GetValue()
		}
	}
	for _, p := range s.GetPorts() {
		proto := "tcp"
		if p.GetProtocol() == deployerv1.PortProtocol_PORT_PROTOCOL_UDP {
			proto = "udp"
		}
		w.Ports = append(w.Ports, driver.Port{Name: p.GetName(), ContainerPort: int(p.GetContainerPort()), Protocol: proto})
	}
	switch s.GetImagePullPolicy() {
	case deployerv1.ImagePullPolicy_IMAGE_PULL_POLICY_ALWAYS:
		w.ImagePullPolicy = corev1.PullAlways
	case deployerv1.ImagePullPolicy_IMAGE_PULL_POLICY_NEVER:
		w.ImagePullPolicy = corev1.PullNever
	}
	hc := s.GetHealthCheck()
	pr := &Probe{
		Period: hc.GetInterval().AsDuration(), Timeout: hc.GetTimeout().AsDuration(),
		InitialDelay:     hc.GetInitialDelay().AsDuration(),
		FailureThreshold: int32(hc.GetFailureThreshold()), SuccessThreshold: int32(hc.GetSuccessThreshold()),
	}
	switch {
	case hc.GetHttp() != nil:
		pr.HTTPPath, pr.Port = hc.GetHttp().GetPath(), strconv.Itoa(int(hc.GetHttp().GetPort()))
		if pr.HTTPPath == "" {
			pr.HTTPPath = "/"
		}
		w.Readiness = pr
	case hc.GetTcp() != nil:
		pr.TCP, pr.Port = true, strconv.Itoa(int(hc.GetTcp().GetPort()))
		w.Readiness = pr
	}
	return w
}

// OptionsFor is a rollout step's options from the spec: replicas, the
// rolling strategy's surge and unavailability, the progress deadline.
func OptionsFor(s *deployerv1.ApplicationSpec, replicas int32) Options {
	o := Options{Replicas: replicas, ProgressDeadline: s.GetProgressDeadline().AsDuration()}
	q := func(rq *deployerv1.ReplicaQuantity) *intstr.IntOrString {
		switch v := rq.GetValue().(type) {
		case *deployerv1.ReplicaQuantity_Count:
			x := intstr.FromInt32(v.Count)
			return &x
		case *deployerv1.ReplicaQuantity_Percent:
			x := intstr.FromString(strconv.Itoa(int(v.Percent)) + "%")
			return &x
		}
		return nil
	}
	if r := s.GetStrategy().GetRolling(); r != nil {
		o.MaxSurge, o.MaxUnavailable = q(r.GetMaxSurge()), q(r.GetMaxUnavailable())
	}
	return o
}
