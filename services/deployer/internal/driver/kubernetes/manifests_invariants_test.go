package kubernetes_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Recommended labels every shipped object carries.
const (
	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
	labelPartOf    = "app.kubernetes.io/part-of"
)

// The opsuite components, as --target names them, and those whose state is
// all in JetStream, which production runs twice.
var (
	opsuiteComponents = []string{"healthchecker", "monitor", "logaggregator", "deployer", "pipelinerunner", "gateway"}
	replicatedInProd  = []string{"gateway", "healthchecker", "deployer"}
)

// podController is a Deployment or StatefulSet, reduced to what the checks read.
type podController struct {
	kind, namespace, name string
	replicas              int32
	template              corev1.PodTemplateSpec
	claims                []corev1.PersistentVolumeClaim
	recreate              bool // Deployment strategy Recreate
}

func (w podController) String() string { return w.kind + " " + key(w.namespace, w.name) }

func workloadsOf(b build) []podController {
	var out []podController
	for _, d := range objectsOf[*appsv1.Deployment](b) {
		out = append(out, podController{kind: "Deployment", namespace: d.Namespace, name: d.Name, replicas: ptrOr(d.Spec.Replicas, 1),
			template: d.Spec.Template, recreate: d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType})
	}
	for _, s := range objectsOf[*appsv1.StatefulSet](b) {
		out = append(out, podController{kind: "StatefulSet", namespace: s.Namespace, name: s.Name, replicas: ptrOr(s.Spec.Replicas, 1),
			template: s.Spec.Template, claims: s.Spec.VolumeClaimTemplates})
	}
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// TestManifestsInvariants checks, without a cluster, what every build
// (base, each overlay, rbac/, any loose file) must hold: labels; every
// Deployment with gRPC startup, readiness and liveness probes on its gRPC
// port, requests and limits, a non-root read-only locked-down container,
// exactly one PodDisruptionBudget, its own existing ServiceAccount (token
// mounted only for the deployer) and NetworkPolicies isolating it both
// ways; volumes where it writes; Services that reach declared ports; NATS
// configured (parsed by nats-server itself) for the StatefulSet it runs in;
// the deployer's RBAC; and production's replica counts.
func TestManifestsInvariants(t *testing.T) {
	set := loadManifests(t)
	for _, dir := range set.unused {
		t.Errorf("component %s is used by no kustomization", dir)
	}
	for _, b := range set.builds {
		t.Run(b.name, func(t *testing.T) {
			checkLabels(t, b)
			checkNoSecrets(t, b)
			for _, w := range workloadsOf(b) {
				checkWorkload(t, b, w)
			}
			checkServices(t, b)
			checkNATS(t, b)
			checkRBAC(t, b)
		})
	}

	t.Run("production replicas", func(t *testing.T) {
		prod := set.build(t, "overlays/production")
		ws := map[string]podController{}
		for _, w := range workloadsOf(prod) {
			ws[w.template.Labels[labelComponent]] = w
		}
		if n := ws["jetstream"].replicas; n != 3 {
			t.Errorf("NATS StatefulSet runs %d replicas in production, want 3", n)
		}
		for _, c := range opsuiteComponents {
			w, ok := ws[c]
			switch {
			case !ok:
				t.Errorf("production runs no %s", c)
			case slices.Contains(replicatedInProd, c) && w.replicas != 2:
				t.Errorf("%s: %d replicas in production, want 2 (its state is all in JetStream)", w, w.replicas)
			}
		}
		spread := false
		for _, c := range ws["jetstream"].template.Spec.TopologySpreadConstraints {
			spread = spread || (c.TopologyKey == corev1.LabelHostname && c.WhenUnsatisfiable == corev1.DoNotSchedule && c.MaxSkew == 1)
		}
		if !spread {
			t.Errorf("production NATS pods are not forced onto different nodes (topology spread on %s, DoNotSchedule)", corev1.LabelHostname)
		}
	})

	t.Run("rbac variants agree", func(t *testing.T) {
		checkRBACVariantsAgree(t, set)
	})
}

func checkLabels(t *testing.T, b build) {
	for _, o := range b.objs {
		for _, l := range []string{labelName, labelComponent, labelPartOf} {
			if o.u.GetLabels()[l] == "" {
				t.Errorf("%s: no label %s", o, l)
			}
		}
		if o.u.GetLabels()[labelPartOf] != "opsuite" && o.u.GetLabels()[labelPartOf] != "" {
			t.Errorf("%s: %s=%s, want opsuite", o, labelPartOf, o.u.GetLabels()[labelPartOf])
		}
	}
	for _, w := range workloadsOf(b) {
		for _, l := range []string{labelName, labelComponent, labelPartOf} {
			if w.template.Labels[l] == "" {
				t.Errorf("%s: pod template has no label %s", w, l)
			}
		}
	}
}

// checkNoSecrets: the tokens are referenced, never shipped.
func checkNoSecrets(t *testing.T, b build) {
	for _, s := range objectsOf[*corev1.Secret](b) {
		t.Errorf("Secret %s is shipped; the manifests reference secrets, the operator creates them", key(s.Namespace, s.Name))
	}
}

func checkWorkload(t *testing.T, b build, w podController) {
	spec := w.template.Spec
	component := w.template.Labels[labelComponent]
	isOpsuite := w.template.Labels[labelName] == "opsuite"
	if len(spec.Containers) == 0 {
		t.Fatalf("%s: no containers", w)
	}
	if len(spec.InitContainers) > 0 || len(spec.EphemeralContainers) > 0 {
		t.Errorf("%s: init or ephemeral containers are not expected", w)
	}
	sel, err := metav1.LabelSelectorAsSelector(selectorOf(b, w))
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.template.Labels)) {
		t.Errorf("%s: selector %v does not select its own pod template (%v)", w, selectorOf(b, w), err)
	}

	// Pod security: non-root, default seccomp.
	psc := spec.SecurityContext
	if psc == nil || !ptrOr(psc.RunAsNonRoot, false) {
		t.Errorf("%s: pod securityContext.runAsNonRoot is not true", w)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", w)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: uses the host's network, PID or IPC namespace", w)
	}

	// Identity: its own ServiceAccount, which exists; a token only for the deployer.
	sa := spec.ServiceAccountName
	var account *corev1.ServiceAccount
	for _, s := range objectsOf[*corev1.ServiceAccount](b) {
		if s.Namespace == w.namespace && s.Name == sa {
			account = s
		}
	}
	switch {
	case sa == "" || sa == "default":
		t.Errorf("%s: runs as the namespace's default ServiceAccount; give it its own", w)
	case account == nil:
		t.Errorf("%s: ServiceAccount %s is not in the build", w, key(w.namespace, sa))
	default:
		mounted := ptrOr(spec.AutomountServiceAccountToken, ptrOr(account.AutomountServiceAccountToken, true))
		if want := component == "deployer"; mounted != want {
			t.Errorf("%s: ServiceAccount token mounted=%v, want %v (only the deployer talks to the API server)", w, mounted, want)
		}
	}

	// Disruptions: exactly one PodDisruptionBudget selects its pods.
	var pdbs []*policyv1.PodDisruptionBudget
	for _, p := range objectsOf[*policyv1.PodDisruptionBudget](b) {
		s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && p.Namespace == w.namespace && !s.Empty() && s.Matches(labels.Set(w.template.Labels)) {
			pdbs = append(pdbs, p)
		}
	}
	switch {
	case len(pdbs) != 1:
		t.Errorf("%s: %d PodDisruptionBudgets select its pods, want 1 (evictions fail with more)", w, len(pdbs))
	case pdbs[0].Spec.MaxUnavailable == nil && pdbs[0].Spec.MinAvailable == nil:
		t.Errorf("%s: PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", w, pdbs[0].Name)
	case w.kind == "StatefulSet" && intstr.FromInt32(1) != ptrOr(pdbs[0].Spec.MaxUnavailable, intstr.IntOrString{}):
		t.Errorf("%s: PodDisruptionBudget %s: maxUnavailable %v, want 1 (a quorum stays)", w, pdbs[0].Name, pdbs[0].Spec.MaxUnavailable)
	}

	// Network: isolated both ways.
	var ingress, egress bool
	for _, np := range policiesSelecting(b, w.namespace, w.template.Labels) {
		for _, pt := range policyTypes(np) {
			ingress = ingress || pt == "Ingress"
			egress = egress || pt == "Egress"
		}
	}
	if !ingress || !egress {
		t.Errorf("%s: its pods are not selected by NetworkPolicies for both directions (ingress %v, egress %v)", w, ingress, egress)
	}

	// Storage: claims exist; a ReadWriteOnce claim means one pod at a time.
	rwo := false
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		var claim *corev1.PersistentVolumeClaim
		for _, c := range objectsOf[*corev1.PersistentVolumeClaim](b) {
			if c.Namespace == w.namespace && c.Name == v.PersistentVolumeClaim.ClaimName {
				claim = c
			}
		}
		if claim == nil {
			t.Errorf("%s: volume %s: PersistentVolumeClaim %s is not in the build", w, v.Name, v.PersistentVolumeClaim.ClaimName)
			continue
		}
		rwo = rwo || slices.Contains(claim.Spec.AccessModes, corev1.ReadWriteOnce) || slices.Contains(claim.Spec.AccessModes, corev1.ReadWriteOncePod)
	}
	if rwo && w.kind == "Deployment" && (w.replicas > 1 || !w.recreate) {
		t.Errorf("%s: mounts a ReadWriteOnce claim with %d replicas, recreate=%v; want 1 replica and strategy Recreate", w, w.replicas, w.recreate)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range w.claims {
		volumes[c.Name] = corev1.Volume{Name: c.Name}
	}
	for _, c := range spec.Containers {
		where := fmt.Sprintf("%s container %s", w, c.Name)
		checkContainerSecurity(t, where, c)
		checkResources(t, where, c)
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
		for _, kind := range slices.Sorted(maps.Keys(probes)) {
			p := probes[kind]
			switch {
			case p == nil:
				t.Errorf("%s: no %s probe", where, kind)
			case isOpsuite && p.GRPC == nil:
				t.Errorf("%s: %s probe is not a gRPC probe (grpc.health.v1 follows readiness)", where, kind)
			case isOpsuite && p.GRPC.Port != ports["grpc"]:
				t.Errorf("%s: %s probe on port %d, the gRPC port is %d", where, kind, p.GRPC.Port, ports["grpc"])
			case p.HTTPGet != nil && p.HTTPGet.Port.Type == intstr.String && ports[p.HTTPGet.Port.StrVal] == 0:
				t.Errorf("%s: %s probe on port %q, which the container does not declare", where, kind, p.HTTPGet.Port.StrVal)
			}
		}
		if p := c.LivenessProbe; p != nil && c.StartupProbe == nil && p.InitialDelaySeconds == 0 {
			t.Errorf("%s: liveness probe without a startup probe or initial delay", where)
		}
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("%s: mounts volume %s, which the pod does not have", where, m.Name)
			}
		}
		env := containerEnv(t, b, w.namespace, c)
		if isOpsuite {
			checkOpsuiteContainer(t, where, component, c, env)
		}
		if v, ok := env["GOMEMLIMIT"]; ok {
			limit, err := parseGoMemLimit(v)
			switch lim := c.Resources.Limits.Memory(); {
			case err != nil:
				t.Errorf("%s: GOMEMLIMIT=%s: %v", where, v, err)
			case limit >= lim.Value():
				t.Errorf("%s: GOMEMLIMIT=%s is not below the memory limit %s: the runtime would not collect before the kernel kills it", where, v, lim)
			case limit < lim.Value()*3/4:
				t.Errorf("%s: GOMEMLIMIT=%s wastes more than a quarter of the memory limit %s", where, v, lim)
			}
		} else if isOpsuite {
			t.Errorf("%s: no GOMEMLIMIT: with GOGC=400 the heap may outgrow the memory limit", where)
		}
		// A read-only root file system: every place it writes is a volume.
		if ptrOr(ptrOr(c.SecurityContext, corev1.SecurityContext{}).ReadOnlyRootFilesystem, false) {
			for _, dir := range writableDirs(isOpsuite, env) {
				if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir && !m.ReadOnly }) {
					t.Errorf("%s: writes to %s, which is not a writable volume on a read-only root", where, dir)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil && configMap(b, w.namespace, ef.ConfigMapRef.Name) == nil {
				t.Errorf("%s: envFrom ConfigMap %s is not in the build", where, ef.ConfigMapRef.Name)
			}
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") {
			t.Errorf("%s: image %q names no version tag", where, c.Image)
		}
	}
}

func selectorOf(b build, w podController) *metav1.LabelSelector {
	for _, d := range objectsOf[*appsv1.Deployment](b) {
		if w.kind == "Deployment" && d.Namespace == w.namespace && d.Name == w.name {
			return d.Spec.Selector
		}
	}
	for _, s := range objectsOf[*appsv1.StatefulSet](b) {
		if w.kind == "StatefulSet" && s.Namespace == w.namespace && s.Name == w.name {
			return s.Spec.Selector
		}
	}
	return nil
}

func checkContainerSecurity(t *testing.T, where string, c corev1.Container) {
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	if !ptrOr(sc.ReadOnlyRootFilesystem, false) {
		t.Errorf("%s: root file system is not read-only", where)
	}
	if ptrOr(sc.AllowPrivilegeEscalation, true) {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if ptrOr(sc.Privileged, false) {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %v: want drop [ALL], add none", where, sc.Capabilities)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Errorf("%s: runs as root", where)
	}
}

func checkResources(t *testing.T, where string, c corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		lim, hasLim := c.Resources.Limits[r]
		switch {
		case !hasReq || req.IsZero():
			t.Errorf("%s: no %s request", where, r)
		case !hasLim || lim.IsZero():
			t.Errorf("%s: no %s limit", where, r)
		case req.Cmp(lim) > 0:
			t.Errorf("%s: %s request %s above its limit %s", where, r, req.String(), lim.String())
		}
	}
	// Idle, a process takes about 40 MiB (docs/benchmarks.md).
	if m := c.Resources.Requests.Memory(); m.Cmp(resource.MustParse("32Mi")) < 0 {
		t.Errorf("%s: memory request %s is below what the process needs idle", where, m)
	}
}

// checkOpsuiteContainer: `serve --target=<component>` of the opsuite image,
// with the ports the probes and Services use and the tokens from the Secret.
func checkOpsuiteContainer(t *testing.T, where, component string, c corev1.Container, env map[string]string) {
	if !slices.Contains(opsuiteComponents, component) {
		t.Errorf("%s: component label %q is not an opsuite component", where, component)
	}
	if len(c.Command) > 0 || len(c.Args) < 2 || c.Args[0] != "serve" || !slices.Contains(c.Args, "--target="+component) {
		t.Errorf("%s: command %v args %v, want the image's entrypoint with serve --target=%s", where, c.Command, c.Args, component)
	}
	grpcPort, httpPort := int32(0), int32(0)
	for _, p := range c.Ports {
		switch p.Name {
		case "grpc":
			grpcPort = p.ContainerPort
		case "http":
			httpPort = p.ContainerPort
		}
	}
	for flag, port := range map[string]int32{"OPSUITE_GRPC_ADDR": grpcPort, "OPSUITE_HTTP_ADDR": httpPort} {
		addr, ok := env[flag]
		_, p, found := strings.Cut(addr, ":")
		if !ok || !found || p != strconv.Itoa(int(port)) || port == 0 {
			t.Errorf("%s: %s=%q does not listen on the declared port %d on every interface", where, flag, addr, port)
		}
		if found && strings.HasPrefix(addr, "127.") {
			t.Errorf("%s: %s=%q listens on loopback only", where, flag, addr)
		}
	}
	// The deployer's mounted token is there for its kubernetes driver.
	if got, want := env["OPSUITE_KUBECONFIG"], map[bool]string{true: "in-cluster"}[component == "deployer"]; got != want {
		t.Errorf("%s: OPSUITE_KUBECONFIG=%q, want %q", where, got, want)
	}
	if env["OPSUITE_NATS_URL"] == "" {
		t.Errorf("%s: no OPSUITE_NATS_URL: it would embed a NATS server of its own", where)
	}
	for _, name := range []string{"OPSUITE_ADMIN_TOKEN", "OPSUITE_SERVICE_TOKEN"} {
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: %s does not come from a Secret", where, name)
		}
	}
}

// containerEnv resolves the container's environment: envFrom ConfigMaps of
// the build, then env values (valueFrom entries count as set, empty).
func containerEnv(t *testing.T, b build, ns string, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		if cm := configMap(b, ns, ef.ConfigMapRef.Name); cm != nil {
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

func configMap(b build, ns, name string) *corev1.ConfigMap {
	for _, cm := range objectsOf[*corev1.ConfigMap](b) {
		if cm.Namespace == ns && cm.Name == name {
			return cm
		}
	}
	return nil
}

// writableDirs are where the process writes: for opsuite its data dir and
// the temporary directory (Go's os.TempDir in the container).
func writableDirs(isOpsuite bool, env map[string]string) []string {
	if !isOpsuite {
		return nil
	}
	dir := env["OPSUITE_DATA_DIR"]
	if dir == "" {
		dir = "/data" // the image's working directory, where ./.opsuite would land
	}
	tmp := env["TMPDIR"]
	if tmp == "" {
		tmp = "/tmp"
	}
	return []string{dir, tmp}
}

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does: a number of
// bytes with an optional B, KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("not a positive size with B, KiB, MiB, GiB or TiB")
	}
	return n * mult, nil
}

// checkServices: every Service selects pods of the build, and every port's
// target is a port those pods declare.
func checkServices(t *testing.T, b build) {
	for _, svc := range objectsOf[*corev1.Service](b) {
		where := "Service " + key(svc.Namespace, svc.Name)
		pods := podsSelectedBy(b, svc.Namespace, svc.Spec.Selector)
		if len(svc.Spec.Selector) == 0 || len(pods) == 0 {
			t.Errorf("%s: selector %v selects no pod template of the build", where, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			for _, w := range pods {
				if _, ok := containerPort(w.template.Spec, p.TargetPort); !ok {
					t.Errorf("%s: port %s targets %s, which %s does not declare", where, p.Name, p.TargetPort.String(), w)
				}
			}
		}
	}
}

func podsSelectedBy(b build, ns string, sel map[string]string) []podController {
	var out []podController
	for _, w := range workloadsOf(b) {
		if w.namespace == ns && len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// containerPort resolves a Service target port (number or name) against
// the pod's containers.
func containerPort(spec corev1.PodSpec, target intstr.IntOrString) (int32, bool) {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// checkNATS parses the nats.conf each NATS StatefulSet mounts with
// nats-server's own parser and checks it fits the pods: JetStream on the
// claim's volume, ports as declared, and one route per replica through the
// headless Service (none for a single server).
func checkNATS(t *testing.T, b build) {
	for _, s := range objectsOf[*appsv1.StatefulSet](b) {
		i := slices.IndexFunc(s.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "nats" })
		if i < 0 {
			continue
		}
		c := s.Spec.Template.Spec.Containers[i]
		where := "StatefulSet " + key(s.Namespace, s.Name)
		replicas := ptrOr(s.Spec.Replicas, 1)

		var headless *corev1.Service
		for _, svc := range objectsOf[*corev1.Service](b) {
			if svc.Namespace == s.Namespace && svc.Name == s.Spec.ServiceName {
				headless = svc
			}
		}
		switch {
		case headless == nil:
			t.Errorf("%s: serviceName %s is not a Service of the build", where, s.Spec.ServiceName)
			continue
		case headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses:
			t.Errorf("%s: Service %s must be headless and publish not-ready addresses (routes form before readiness)", where, headless.Name)
		case !labels.SelectorFromSet(headless.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)):
			t.Errorf("%s: Service %s does not select its pods", where, headless.Name)
		}
		if len(s.Spec.VolumeClaimTemplates) == 0 {
			t.Errorf("%s: no volumeClaimTemplates: JetStream needs a volume per pod", where)
		}

		// The config file the args name, from the ConfigMap mounted there.
		if len(c.Args) != 2 || c.Args[0] != "--config" {
			t.Errorf("%s: args %v, want --config <file>", where, c.Args)
			continue
		}
		conf := ""
		for _, m := range c.VolumeMounts {
			if filepath.Dir(c.Args[1]) != m.MountPath {
				continue
			}
			for _, v := range s.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					if cm := configMap(b, s.Namespace, v.ConfigMap.Name); cm != nil {
						conf = cm.Data[filepath.Base(c.Args[1])]
					}
				}
			}
		}
		if conf == "" {
			t.Errorf("%s: %s is not in a ConfigMap of the build mounted there", where, c.Args[1])
			continue
		}
		path := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		pod := s.Name + "-0"
		t.Setenv("POD_NAME", pod)
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Errorf("%s: nats-server refuses %s: %v", where, c.Args[1], err)
			continue
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if opts.ServerName != pod {
			t.Errorf("%s: server_name %q, want the pod name (stable per StatefulSet pod)", where, opts.ServerName)
		}
		if !opts.JetStream {
			t.Errorf("%s: JetStream is not enabled", where)
		}
		onClaim := false
		for _, m := range c.VolumeMounts {
			isClaim := slices.ContainsFunc(s.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name })
			onClaim = onClaim || (isClaim && strings.HasPrefix(opts.StoreDir+"/", strings.TrimSuffix(m.MountPath, "/")+"/"))
		}
		if !onClaim {
			t.Errorf("%s: JetStream store_dir %s is not on a volume claim", where, opts.StoreDir)
		}
		if opts.PidFile != "" && !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.MountPath == filepath.Dir(opts.PidFile) && !m.ReadOnly
		}) {
			t.Errorf("%s: pid_file %s is not on a writable volume (the root file system is read-only)", where, opts.PidFile)
		}
		if int32(opts.Port) != ports["client"] || int32(opts.HTTPPort) != ports["monitor"] {
			t.Errorf("%s: listens on %d (HTTP %d), container ports client %d, monitor %d", where, opts.Port, opts.HTTPPort, ports["client"], ports["monitor"])
		}
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Host)
		}
		var want []string
		if replicas > 1 {
			if int32(opts.Cluster.Port) != ports["cluster"] {
				t.Errorf("%s: cluster port %d, container port cluster %d", where, opts.Cluster.Port, ports["cluster"])
			}
			for i := range replicas {
				want = append(want, fmt.Sprintf("%s-%d.%s:%d", s.Name, i, s.Spec.ServiceName, ports["cluster"]))
			}
		}
		slices.Sort(routes)
		if !slices.Equal(routes, want) {
			t.Errorf("%s: %d replicas, routes %v, want %v", where, replicas, routes, want)
		}
	}
}

// checkRBAC: bindings point at roles and ServiceAccounts of the build, and
// no rule reaches secrets, config maps, pod exec or RBAC, or uses wildcards.
func checkRBAC(t *testing.T, b build) {
	roles := map[string][]rbacv1.PolicyRule{}
	for _, r := range objectsOf[*rbacv1.ClusterRole](b) {
		roles["ClusterRole/"+r.Name] = r.Rules
	}
	for _, r := range objectsOf[*rbacv1.Role](b) {
		roles["Role/"+key(r.Namespace, r.Name)] = r.Rules
	}
	sas := map[string]bool{}
	for _, s := range objectsOf[*corev1.ServiceAccount](b) {
		sas[key(s.Namespace, s.Name)] = true
	}
	check := func(where string, ref rbacv1.RoleRef, ns string, subjects []rbacv1.Subject) {
		k := ref.Kind + "/" + ref.Name
		if ref.Kind == "Role" {
			k = "Role/" + key(ns, ref.Name)
		}
		if _, ok := roles[k]; !ok {
			t.Errorf("%s: role %s is not in the build", where, k)
		}
		for _, s := range subjects {
			if s.Kind == rbacv1.ServiceAccountKind && !sas[key(s.Namespace, s.Name)] {
				t.Errorf("%s: ServiceAccount %s is not in the build", where, key(s.Namespace, s.Name))
			}
		}
	}
	for _, rb := range objectsOf[*rbacv1.ClusterRoleBinding](b) {
		check("ClusterRoleBinding "+rb.Name, rb.RoleRef, "", rb.Subjects)
	}
	for _, rb := range objectsOf[*rbacv1.RoleBinding](b) {
		check("RoleBinding "+key(rb.Namespace, rb.Name), rb.RoleRef, rb.Namespace, rb.Subjects)
	}
	for name, rules := range roles {
		for _, r := range rules {
			for _, res := range r.Resources {
				if res == "*" || res == "secrets" || res == "configmaps" || strings.HasPrefix(res, "pods/") ||
					slices.Contains(r.APIGroups, rbacv1.GroupName) || slices.Contains(r.APIGroups, "*") {
					t.Errorf("%s: grants %v on %v %s", name, r.Verbs, r.APIGroups, res)
				}
			}
			if slices.Contains(r.Verbs, "*") || slices.Contains(r.Verbs, "escalate") || slices.Contains(r.Verbs, "bind") || slices.Contains(r.Verbs, "impersonate") {
				t.Errorf("%s: grants verbs %v", name, r.Verbs)
			}
		}
	}
}

// checkRBACVariantsAgree: the namespaced Role grants exactly the
// ClusterRole's rules, except that on namespaces it may only read (it
// neither creates nor deletes namespaces).
func checkRBACVariantsAgree(t *testing.T, set manifestSet) {
	flatten := func(rules []rbacv1.PolicyRule) []string {
		var out []string
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out = append(out, g+"/"+res+":"+v)
					}
				}
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	var cluster, namespaced []string
	for _, b := range set.builds {
		for _, r := range objectsOf[*rbacv1.ClusterRole](b) {
			if r.Name == deployerSAName {
				cluster = flatten(r.Rules)
			}
		}
		for _, r := range objectsOf[*rbacv1.Role](b) {
			if r.Name == deployerSAName {
				namespaced = flatten(r.Rules)
			}
		}
	}
	if cluster == nil || namespaced == nil {
		t.Fatalf("want both a ClusterRole and a Role %s among the builds; cluster %v, namespaced %v", deployerSAName, cluster, namespaced)
	}
	want := slices.DeleteFunc(slices.Clone(cluster), func(s string) bool {
		return strings.HasPrefix(s, "/namespaces:") && s != "/namespaces:get"
	})
	if !slices.Equal(namespaced, want) {
		t.Errorf("namespaced Role grants\n%v\nthe ClusterRole's rules within a namespace are\n%v", namespaced, want)
	}
}
