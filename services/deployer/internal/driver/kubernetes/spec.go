package kubernetes

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// LabelSlot names the Deployment ("blue" or "green") a pod belongs to.
// AnnotationActiveSlot on the Service records which slot serves.
const (
	LabelSlot            = "opsuite.slot"
	AnnotationActiveSlot = "opsuite.active-slot"
	AnnotationRevision   = "opsuite.revision"
	containerName        = "app"
)

// The two Deployments of an application environment.
const (
	SlotBlue  = "blue"
	SlotGreen = "green"
)

func otherSlot(s string) string {
	if s == SlotBlue {
		return SlotGreen
	}
	return SlotBlue
}

// ServiceType is the type of the Service in front of the pods.
type ServiceType string

const (
	ServiceClusterIP    ServiceType = "ClusterIP"
	ServiceLoadBalancer ServiceType = "LoadBalancer"
	ServiceNodePort     ServiceType = "NodePort"
)

// Target is one application environment on the cluster: where its objects
// live and the cluster-level settings of its pods and Service.
type Target struct {
	App         string
	Environment string
	// Namespace; empty means "<app>-<environment>", created (and on Delete
	// removed) by the platform. A namespace named here that already exists
	// is used as it is and never deleted.
	Namespace          string
	ServiceType        ServiceType // default ClusterIP
	ServiceAnnotations map[string]string
	PodAnnotations     map[string]string
	NodeSelector       map[string]string
	ServiceAccount     string
	ImagePullSecrets   []string
	// Gateway is the Gateway API Gateway ("namespace/name") the
	// environment's HTTPRoute attaches to. When set and the cluster serves
	// gateway.networking.k8s.io/v1 HTTPRoutes, a canary splits traffic by
	// exact HTTPRoute backend weights between per-slot Services; otherwise
	// (empty, or no Gateway API CRDs) by the replica ratio behind the one
	// Service.
	Gateway string
}

func (t Target) namespace() string {
	if t.Namespace != "" {
		return t.Namespace
	}
	return t.App + "-" + t.Environment
}

// ownNamespace: the namespace is derived, so the platform creates and
// deletes it.
func (t Target) ownNamespace() bool { return t.Namespace == "" }

// base is the name of the Service and the prefix of the Deployments: the
// application alone in its own namespace, with the environment otherwise.
func (t Target) base() string {
	if t.ownNamespace() {
		return t.App
	}
	return t.App + "-" + t.Environment
}

func (t Target) serviceName() string { return t.base() }

// ServiceHost is the cluster DNS name of the environment's Service.
func (t Target) ServiceHost() string               { return t.serviceName() + "." + t.namespace() + ".svc" }
func (t Target) deploymentName(slot string) string { return t.base() + "-" + slot }

// selector is what identifies the environment's objects.
func (t Target) selector() map[string]string {
	return map[string]string{
		driver.LabelManagedBy:   driver.ManagedByValue,
		driver.LabelApp:         t.App,
		driver.LabelEnvironment: t.Environment,
	}
}

func (t Target) slotSelector(slot string) map[string]string {
	m := t.selector()
	m[LabelSlot] = slot
	return m
}

// Probe is a readiness probe; exactly one of HTTPPath or TCP is used.
type Probe struct {
	// HTTPPath is probed with GET on Port; a 2xx/3xx answer is ready.
	HTTPPath string
	// TCP probes a connection to Port.
	TCP bool
	// Port is the port name or number (as text).
	Port             string
	Period           time.Duration
	Timeout          time.Duration
	FailureThreshold int32
	SuccessThreshold int32
	InitialDelay     time.Duration
}

// Resources of each pod's container: requests equal limits.
type Resources struct {
	CPUs        float64
	MemoryBytes int64
}

// Workload is one revision of an application: what each pod runs.
type Workload struct {
	Revision        int64
	Image           string
	Command         []string
	Args            []string
	Env             map[string]string
	WorkingDir      string
	Ports           []driver.Port
	Resources       Resources
	Readiness       *Probe
	ImagePullPolicy corev1.PullPolicy // default IfNotPresent
	StopGracePeriod time.Duration
	MinReady        time.Duration
}

// Options of one rollout step.
type Options struct {
	// Replicas is the environment's desired size.
	Replicas int32
	// MaxSurge and MaxUnavailable of the Deployment's rolling update
	// (counts or percentages, as in Kubernetes); defaults 25% and 0.
	MaxSurge, MaxUnavailable *intstr.IntOrString
	// ProgressDeadline becomes the Deployment's progressDeadlineSeconds;
	// default 10m, at least 1s.
	ProgressDeadline time.Duration
}

func (o Options) deadlineSeconds() int32 {
	if o.ProgressDeadline <= 0 {
		return 600
	}
	return int32(max(1, math.Ceil(o.ProgressDeadline.Seconds())))
}

// validateTarget checks names before anything is sent to the cluster.
func validateTarget(v *validation.Error, t Target) {
	label := func(field, s string) {
		if s == "" {
			v.Add(field, "required")
			return
		}
		for _, msg := range k8svalidation.IsDNS1123Label(s) {
			v.Add(field, "%q: %s", s, msg)
		}
	}
	label("application", t.App)
	label("environment", t.Environment)
	if t.App != "" && t.Environment != "" {
		if t.Namespace != "" {
			label("namespace", t.Namespace)
		} else if n := len(t.namespace()); n > 63 {
			v.Add("namespace", "derived namespace %q is %d characters, more than 63: name one", t.namespace(), n)
		}
		// Deployment names become pod name prefixes and label values.
		if n := len(t.deploymentName(SlotGreen)); n > 47 {
			v.Add("application", "%q with environment %q makes Deployment names of %d characters, at most 47 allowed", t.App, t.Environment, n)
		}
	}
	switch t.ServiceType {
	case "", ServiceClusterIP, ServiceLoadBalancer, ServiceNodePort:
	default:
		v.Add("service_type", "%q is not ClusterIP, LoadBalancer or NodePort", t.ServiceType)
	}
	checkLabels(v, "node_selector", t.NodeSelector, false)
	checkAnnotations(v, "service_annotations", t.ServiceAnnotations)
	checkAnnotations(v, "pod_annotations", t.PodAnnotations)
	if t.ServiceAccount != "" {
		for _, msg := range k8svalidation.IsDNS1123Subdomain(t.ServiceAccount) {
			v.Add("service_account", "%q: %s", t.ServiceAccount, msg)
		}
	}
	for i, s := range t.ImagePullSecrets {
		for _, msg := range k8svalidation.IsDNS1123Subdomain(s) {
			v.Add("image_pull_secrets["+strconv.Itoa(i)+"]", "%q: %s", s, msg)
		}
	}
	validateGateway(v, t.Gateway)
}

func checkLabels(v *validation.Error, field string, m map[string]string, reserved bool) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		for _, msg := range k8svalidation.IsQualifiedName(k) {
			v.Add(field, "key %q: %s", k, msg)
		}
		for _, msg := range k8svalidation.IsValidLabelValue(m[k]) {
			v.Add(field, "value of %q: %s", k, msg)
		}
		if reserved && strings.HasPrefix(k, "opsuite.") {
			v.Add(field, "key %q: the opsuite. prefix is reserved", k)
		}
	}
}

func checkAnnotations(v *validation.Error, field string, m map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		for _, msg := range k8svalidation.IsQualifiedName(k) {
			v.Add(field, "key %q: %s", k, msg)
		}
	}
}

// validateWorkload checks a revision's pod spec.
func validateWorkload(v *validation.Error, w *Workload) {
	if w == nil {
		v.Add("workload", "required")
		return
	}
	if w.Revision <= 0 {
		v.Add("revision", "must be positive, got %d", w.Revision)
	}
	switch {
	case w.Image == "":
		v.Add("image", "required")
	case strings.TrimSpace(w.Image) != w.Image || strings.ContainsAny(w.Image, " \t\n"):
		v.Add("image", "%q contains white space", w.Image)
	default:
		if _, err := reference.ParseNormalizedNamed(w.Image); err != nil {
			v.Add("image", "%q is not an image reference: %v", w.Image, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.Env)) {
		for _, msg := range k8svalidation.IsEnvVarName(k) {
			v.Add("env", "%q: %s", k, msg)
		}
	}
	names := map[string]bool{}
	for i, p := range w.Ports {
		f := "ports[" + strconv.Itoa(i) + "]"
		if p.Name != "" {
			for _, msg := range k8svalidation.IsValidPortName(p.Name) {
				v.Add(f+".name", "%q: %s", p.Name, msg)
			}
			if names[p.Name] {
				v.Add(f+".name", "%q used twice", p.Name)
			}
			names[p.Name] = true
		}
		for _, msg := range k8svalidation.IsValidPortNum(p.ContainerPort) {
			v.Add(f+".container_port", "%d: %s", p.ContainerPort, msg)
		}
		switch strings.ToLower(p.Protocol) {
		case "", "tcp", "udp":
		default:
			v.Add(f+".protocol", "%q is not tcp or udp", p.Protocol)
		}
	}
	if w.Resources.CPUs < 0 || math.IsNaN(w.Resources.CPUs) || math.IsInf(w.Resources.CPUs, 0) {
		v.Add("resources.cpus", "must be a non-negative number")
	}
	if w.Resources.MemoryBytes < 0 {
		v.Add("resources.memory_bytes", "must not be negative")
	}
	switch w.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		v.Add("image_pull_policy", "%q is not Always, IfNotPresent or Never", w.ImagePullPolicy)
	}
	if pr := w.Readiness; pr != nil {
		if (pr.HTTPPath == "") == !pr.TCP {
			v.Add("readiness", "set exactly one of http_path and tcp")
		}
		if pr.HTTPPath != "" && !strings.HasPrefix(pr.HTTPPath, "/") {
			v.Add("readiness.http_path", "%q must start with /", pr.HTTPPath)
		}
		if pr.Port == "" {
			v.Add("readiness.port", "required")
		} else if n, err := strconv.Atoi(pr.Port); err == nil {
			for _, msg := range k8svalidation.IsValidPortNum(n) {
				v.Add("readiness.port", "%d: %s", n, msg)
			}
		} else if !names[pr.Port] {
			v.Add("readiness.port", "%q names no port of the workload", pr.Port)
		}
	}
}

func validateOptions(v *validation.Error, o Options) {
	if o.Replicas < 0 {
		v.Add("replicas", "must not be negative, got %d", o.Replicas)
	}
	check := func(field string, q *intstr.IntOrString) {
		if q == nil {
			return
		}
		if _, err := intstr.GetScaledValueFromIntOrPercent(q, 100, true); err != nil || (q.Type == intstr.Int && q.IntVal < 0) {
			v.Add(field, "%q is not a count or a percentage", q.String())
		}
	}
	check("max_surge", o.MaxSurge)
	check("max_unavailable", o.MaxUnavailable)
	if o.MaxSurge != nil && o.MaxUnavailable != nil {
		s, _ := intstr.GetScaledValueFromIntOrPercent(o.MaxSurge, 100, true)
		u, _ := intstr.GetScaledValueFromIntOrPercent(o.MaxUnavailable, 100, false)
		if s == 0 && u == 0 {
			v.Add("max_unavailable", "max_surge and max_unavailable cannot both be 0")
		}
	}
}

// podLabels are the labels of the pods of slot running w.
func (t Target) podLabels(slot string, rev int64) map[string]string {
	m := t.slotSelector(slot)
	m[driver.LabelRevision] = strconv.FormatInt(rev, 10)
	return m
}

// deploymentApply renders the Deployment of slot running w: a typed apply
// configuration, never text.
func (p *Platform) deploymentApply(t Target, slot string, w *Workload, replicas int32, o Options) *appsv1ac.DeploymentApplyConfiguration {
	labels := t.podLabels(slot, w.Revision)
	rev := strconv.FormatInt(w.Revision, 10)

	c := corev1ac.Container().WithName(containerName).WithImage(w.Image)
	if len(w.Command) > 0 {
		c.WithCommand(w.Command...)
	}
	if len(w.Args) > 0 {
		c.WithArgs(w.Args...)
	}
	if w.WorkingDir != "" {
		c.WithWorkingDir(w.WorkingDir)
	}
	for _, k := range slices.Sorted(maps.Keys(w.Env)) {
		c.WithEnv(corev1ac.EnvVar().WithName(k).WithValue(w.Env[k]))
	}
	for _, pt := range w.Ports {
		cp := corev1ac.ContainerPort().WithContainerPort(int32(pt.ContainerPort)).WithProtocol(protocol(pt.Protocol))
		if pt.Name != "" {
			cp.WithName(pt.Name)
		}
		c.WithPorts(cp)
	}
	pull := w.ImagePullPolicy
	if pull == "" {
		pull = corev1.PullIfNotPresent
	}
	c.WithImagePullPolicy(pull)
	if rl := resourceList(w.Resources); len(rl) > 0 {
		c.WithResources(corev1ac.ResourceRequirements().WithRequests(rl).WithLimits(rl))
	}
	if pr := w.Readiness; pr != nil {
		c.WithReadinessProbe(probe(pr))
	}

	ps := corev1ac.PodSpec().WithContainers(c)
	if w.StopGracePeriod > 0 {
		ps.WithTerminationGracePeriodSeconds(int64(math.Ceil(w.StopGracePeriod.Seconds())))
	}
	if len(t.NodeSelector) > 0 {
		ps.WithNodeSelector(t.NodeSelector)
	}
	if t.ServiceAccount != "" {
		ps.WithServiceAccountName(t.ServiceAccount)
	} else {
		ps.WithAutomountServiceAccountToken(false)
	}
	for _, s := range t.ImagePullSecrets {
		ps.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(s))
	}

	tmpl := corev1ac.PodTemplateSpec().WithLabels(labels).WithSpec(ps)
	if len(t.PodAnnotations) > 0 {
		tmpl.WithAnnotations(t.PodAnnotations)
	}

	surge := intstr.FromString("25%")
	unavailable := intstr.FromInt32(0)
	if o.MaxSurge != nil {
		surge = *o.MaxSurge
	}
	if o.MaxUnavailable != nil {
		unavailable = *o.MaxUnavailable
	}
	spec := appsv1ac.DeploymentSpec().
		WithReplicas(replicas).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(t.slotSelector(slot))).
		WithTemplate(tmpl).
		WithRevisionHistoryLimit(p.histKeep).
		WithProgressDeadlineSeconds(o.deadlineSeconds()).
		WithStrategy(appsv1ac.DeploymentStrategy().
			WithType(appsv1.RollingUpdateDeploymentStrategyType).
			WithRollingUpdate(appsv1ac.RollingUpdateDeployment().WithMaxSurge(surge).WithMaxUnavailable(unavailable)))
	if w.MinReady > 0 {
		spec.WithMinReadySeconds(int32(math.Ceil(w.MinReady.Seconds())))
	}
	return appsv1ac.Deployment(t.deploymentName(slot), t.namespace()).
		WithLabels(labels).
		WithAnnotations(map[string]string{AnnotationRevision: rev}).
		WithSpec(spec)
}

func protocol(s string) corev1.Protocol {
	if strings.EqualFold(s, "udp") {
		return corev1.ProtocolUDP
	}
	return corev1.ProtocolTCP
}

func resourceList(r Resources) corev1.ResourceList {
	rl := corev1.ResourceList{}
	if r.CPUs > 0 {
		rl[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(math.Ceil(r.CPUs*1000)), resource.DecimalSI)
	}
	if r.MemoryBytes > 0 {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(r.MemoryBytes, resource.BinarySI)
	}
	return rl
}

func probe(pr *Probe) *corev1ac.ProbeApplyConfiguration {
	port := intstr.Parse(pr.Port)
	h := corev1ac.ProbeHandler()
	if pr.HTTPPath != "" {
		h = h.WithHTTPGet(corev1ac.HTTPGetAction().WithPath(pr.HTTPPath).WithPort(port))
	} else {
		h = h.WithTCPSocket(corev1ac.TCPSocketAction().WithPort(port))
	}
	out := corev1ac.Probe()
	out.ProbeHandlerApplyConfiguration = *h
	secs := func(d time.Duration) int32 { return int32(max(1, math.Ceil(d.Seconds()))) }
	if pr.Period > 0 {
		out.WithPeriodSeconds(secs(pr.Period))
	}
	if pr.Timeout > 0 {
		out.WithTimeoutSeconds(secs(pr.Timeout))
	}
	if pr.InitialDelay > 0 {
		out.WithInitialDelaySeconds(secs(pr.InitialDelay))
	}
	if pr.FailureThreshold > 0 {
		out.WithFailureThreshold(pr.FailureThreshold)
	}
	if pr.SuccessThreshold > 0 {
		out.WithSuccessThreshold(pr.SuccessThreshold)
	}
	return out
}

// serviceApply renders the Service: selector is the environment's
// selector, narrowed to one slot unless slot is "" (canary: both slots).
func (t Target) serviceApply(slot string, ports []corev1.ContainerPort, activeSlot string) *corev1ac.ServiceApplyConfiguration {
	sel := t.selector()
	if slot != "" {
		sel[LabelSlot] = slot
	}
	typ := corev1.ServiceTypeClusterIP
	if t.ServiceType != "" {
		typ = corev1.ServiceType(t.ServiceType)
	}
	spec := corev1ac.ServiceSpec().WithType(typ).WithSelector(sel)
	for _, sp := range servicePorts(ports) {
		spec.WithPorts(sp)
	}
	ann := maps.Clone(t.ServiceAnnotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationActiveSlot] = activeSlot
	return corev1ac.Service(t.serviceName(), t.namespace()).
		WithLabels(t.selector()).
		WithAnnotations(ann).
		WithSpec(spec)
}

// servicePorts are the Service ports of the container's ports: the same
// numbers, targeting the container port by name when it has one.
func servicePorts(ports []corev1.ContainerPort) []*corev1ac.ServicePortApplyConfiguration {
	out := make([]*corev1ac.ServicePortApplyConfiguration, 0, len(ports))
	for _, cp := range ports {
		sp := corev1ac.ServicePort().WithPort(cp.ContainerPort).WithProtocol(cp.Protocol)
		if cp.Name != "" {
			sp.WithName(cp.Name).WithTargetPort(intstr.FromString(cp.Name))
		} else {
			sp.WithName("port-" + strconv.Itoa(int(cp.ContainerPort))).WithTargetPort(intstr.FromInt32(cp.ContainerPort))
		}
		out = append(out, sp)
	}
	return out
}
