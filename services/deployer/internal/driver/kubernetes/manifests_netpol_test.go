package kubernetes_test

import (
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// endpoint is one end of a connection: a pod of a workload of the build,
// a pod elsewhere in the cluster, or an address outside the cluster.
type endpoint struct {
	name     string
	ns       string
	nsLabels map[string]string
	labels   map[string]string // nil outside the cluster
	ip       netip.Addr        // outside the cluster only
	spec     *corev1.PodSpec   // for named ports; nil for pods outside the build
}

func (e endpoint) isPod() bool { return e.labels != nil }

// networkModel evaluates a build's NetworkPolicies as the API defines them:
// a pod selected by no policy of a direction is open in that direction;
// otherwise a connection needs a rule of a selecting policy on each side
// (egress at the source, ingress at the destination) whose peer matches
// the other end and whose ports match the destination port.
type networkModel struct {
	b        build
	policies []*networkingv1.NetworkPolicy
	nsLabels map[string]map[string]string
}

func newNetworkModel(b build) *networkModel {
	m := &networkModel{b: b, policies: objectsOf[*networkingv1.NetworkPolicy](b), nsLabels: map[string]map[string]string{}}
	for _, ns := range objectsOf[*corev1.Namespace](b) {
		l := map[string]string{corev1.LabelMetadataName: ns.Name}
		for k, v := range ns.Labels {
			l[k] = v
		}
		m.nsLabels[ns.Name] = l
	}
	return m
}

func (m *networkModel) pod(w podController) endpoint {
	l := m.nsLabels[w.namespace]
	if l == nil {
		l = map[string]string{corev1.LabelMetadataName: w.namespace}
	}
	return endpoint{name: w.String(), ns: w.namespace, nsLabels: l, labels: w.template.Labels, spec: &w.template.Spec}
}

func foreignPod(name, ns string, nsLabels, podLabels map[string]string) endpoint {
	l := map[string]string{corev1.LabelMetadataName: ns}
	for k, v := range nsLabels {
		l[k] = v
	}
	return endpoint{name: name, ns: ns, nsLabels: l, labels: podLabels}
}

func external(addr string) endpoint {
	return endpoint{name: "address " + addr, ip: netip.MustParseAddr(addr)}
}

func policiesSelecting(b build, ns string, podLabels map[string]string) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range objectsOf[*networkingv1.NetworkPolicy](b) {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err == nil && np.Namespace == ns && sel.Matches(labels.Set(podLabels)) {
			out = append(out, np)
		}
	}
	return out
}

// policyTypes as the API server defaults them: Ingress always, Egress when
// there are egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	if len(np.Spec.Egress) > 0 {
		return []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	return []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
}

// allowed reports whether src may connect to dst on port/proto.
// wideIPBlocks makes ipBlock peers match pods too (some network plugins
// do); use it to prove a denial holds whatever the plugin.
func (m *networkModel) allowed(src, dst endpoint, port int32, proto corev1.Protocol, wideIPBlocks bool) bool {
	return m.egressAllowed(src, dst, port, proto, wideIPBlocks) && m.ingressAllowed(src, dst, port, proto, wideIPBlocks)
}

func (m *networkModel) egressAllowed(src, dst endpoint, port int32, proto corev1.Protocol, wide bool) bool {
	if !src.isPod() {
		return true
	}
	isolated := false
	for _, np := range policiesSelecting(m.b, src.ns, src.labels) {
		if !slices.Contains(policyTypes(np), networkingv1.PolicyTypeEgress) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Egress {
			if m.peersMatch(r.To, np.Namespace, dst, wide) && portsMatch(r.Ports, dst, port, proto) {
				return true
			}
		}
	}
	return !isolated
}

func (m *networkModel) ingressAllowed(src, dst endpoint, port int32, proto corev1.Protocol, wide bool) bool {
	if !dst.isPod() {
		return true
	}
	isolated := false
	for _, np := range policiesSelecting(m.b, dst.ns, dst.labels) {
		if !slices.Contains(policyTypes(np), networkingv1.PolicyTypeIngress) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Ingress {
			if m.peersMatch(r.From, np.Namespace, src, wide) && portsMatch(r.Ports, dst, port, proto) {
				return true
			}
		}
	}
	return !isolated
}

func (m *networkModel) peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNS string, e endpoint, wide bool) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			if e.isPod() {
				if wide {
					return true
				}
				continue
			}
			if ipBlockContains(p.IPBlock, e.ip) {
				return true
			}
			continue
		}
		if !e.isPod() {
			continue
		}
		nsOK := e.ns == policyNS
		if p.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
			nsOK = err == nil && sel.Matches(labels.Set(e.nsLabels))
		}
		podOK := true
		if p.PodSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
			podOK = err == nil && sel.Matches(labels.Set(e.labels))
		}
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func ipBlockContains(b *networkingv1.IPBlock, ip netip.Addr) bool {
	pfx, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !pfx.Contains(ip) {
		return false
	}
	for _, ex := range b.Except {
		if p, err := netip.ParsePrefix(ex); err == nil && p.Contains(ip) {
			return false
		}
	}
	return true
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, dst endpoint, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if ptrOr(p.Protocol, corev1.ProtocolTCP) != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.Int:
			if p.Port.IntVal == port || (p.EndPort != nil && port >= p.Port.IntVal && port <= *p.EndPort) {
				return true
			}
		case dst.spec != nil:
			for _, c := range dst.spec.Containers {
				for _, cp := range c.Ports {
					cpProto := cp.Protocol
					if cpProto == "" {
						cpProto = corev1.ProtocolTCP
					}
					if cp.Name == p.Port.StrVal && cp.ContainerPort == port && cpProto == proto {
						return true
					}
				}
			}
		}
	}
	return false
}

// call is a connection the configuration makes: from a workload to the
// Service an OPSUITE_*_ADDR or OPSUITE_NATS_URL names, resolved to the
// pods behind it and their container port.
type call struct {
	from, to podController
	env      string
	port     int32
}

// calls derives every connection from the workloads' environment.
func calls(t *testing.T, b build) []call {
	var out []call
	for _, w := range workloadsOf(b) {
		for _, c := range w.template.Spec.Containers {
			env := containerEnv(t, b, w.namespace, c)
			for _, name := range slices.Sorted(maps.Keys(env)) {
				v := env[name]
				if !(strings.HasPrefix(name, "OPSUITE_") && strings.HasSuffix(name, "_ADDR") && name != "OPSUITE_GRPC_ADDR" && name != "OPSUITE_HTTP_ADDR") && name != "OPSUITE_NATS_URL" {
					continue
				}
				hostport := v
				if name == "OPSUITE_NATS_URL" {
					u, err := url.Parse(v)
					if err != nil {
						t.Errorf("%s: %s=%q: %v", w, name, v, err)
						continue
					}
					hostport = u.Host
				}
				host, portStr, err := net.SplitHostPort(hostport)
				port, perr := strconv.Atoi(portStr)
				if err != nil || perr != nil {
					t.Errorf("%s: %s=%q is not host:port", w, name, v)
					continue
				}
				svcName, rest, _ := strings.Cut(host, ".")
				ns := w.namespace
				if rest != "" {
					ns, _, _ = strings.Cut(rest, ".")
				}
				var svc *corev1.Service
				for _, s := range objectsOf[*corev1.Service](b) {
					if s.Namespace == ns && s.Name == svcName {
						svc = s
					}
				}
				if svc == nil {
					t.Errorf("%s: %s=%q names no Service of the build", w, name, v)
					continue
				}
				i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(port) })
				if i < 0 {
					t.Errorf("%s: %s=%q: Service %s has no port %d", w, name, v, svc.Name, port)
					continue
				}
				for _, to := range podsSelectedBy(b, ns, svc.Spec.Selector) {
					cp, ok := containerPort(to.template.Spec, svc.Spec.Ports[i].TargetPort)
					if !ok {
						t.Errorf("%s: %s=%q: %s declares no port %s", w, name, v, to, svc.Spec.Ports[i].TargetPort.String())
						continue
					}
					if to.kind == w.kind && to.name == w.name {
						continue // itself: served in process
					}
					out = append(out, call{from: w, to: to, env: name, port: cp})
				}
			}
		}
	}
	return out
}

func namedPort(w podController, name string) int32 {
	for _, c := range w.template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// TestManifestsNetworkPolicies evaluates each build's NetworkPolicies
// against what the configuration says each component really needs, and
// against what nothing needs. Allowed: every call an OPSUITE_*_ADDR or
// OPSUITE_NATS_URL names (egress at the caller and ingress at the callee),
// DNS for every pod, routes between the NATS pods, the gateway's HTTP port
// from anywhere, the deployer to the API server, the health-checker's,
// monitor's and pipeline-runner's outside world. Denied, whichever way
// the network plugin reads ipBlocks: gRPC from any component not
// configured to call the service, anything from other namespaces except
// the gateway's HTTP port (and /metrics to a namespace labelled for
// scraping), NATS routes from anything but NATS, the outside world for
// the gateway and log-aggregator.
func TestManifestsNetworkPolicies(t *testing.T) {
	set := loadManifests(t)
	for _, b := range set.builds {
		ws := workloadsOf(b)
		if len(ws) == 0 {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			m := newNetworkModel(b)
			want := func(ok bool, what string, src, dst endpoint, port int32, proto corev1.Protocol) {
				t.Helper()
				if got := m.allowed(src, dst, port, proto, !ok); got != ok {
					verb := "is denied"
					if got {
						verb = "is allowed"
					}
					t.Errorf("%s: %s -> %s port %d/%s %s", what, src.name, dst.name, port, proto, verb)
				}
			}
			byComponent := map[string]podController{}
			for _, w := range ws {
				byComponent[w.template.Labels[labelComponent]] = w
			}
			dns := foreignPod("kube-dns", "kube-system", nil, map[string]string{"k8s-app": "kube-dns"})
			elsewhere := foreignPod("a pod of another namespace with the gateway's labels", "elsewhere", nil, byComponent["gateway"].template.Labels)
			scraper := foreignPod("a scraper in a namespace labelled opsuite.io/scrape=true", "monitoring", map[string]string{"opsuite.io/scrape": "true"}, map[string]string{"app": "prometheus"})
			world := external("203.0.113.7")
			apiServer := external("198.51.100.10")

			// What the configuration calls.
			cs := calls(t, b)
			callers := map[string]bool{} // "from->to"
			for _, c := range cs {
				want(true, c.env, m.pod(c.from), m.pod(c.to), c.port, corev1.ProtocolTCP)
				callers[c.from.String()+"->"+c.to.String()] = true
			}
			if len(cs) == 0 {
				t.Fatalf("no workload calls another: the environment names no addresses")
			}
			for _, w := range ws {
				src := m.pod(w)
				want(true, "DNS", src, dns, 53, corev1.ProtocolUDP)
				want(true, "DNS over TCP", src, dns, 53, corev1.ProtocolTCP)
				for _, p := range w.template.Spec.Containers[0].Ports {
					if w.template.Labels[labelComponent] == "gateway" && p.Name == "http" {
						want(true, "REST from anywhere", world, src, p.ContainerPort, corev1.ProtocolTCP)
						want(true, "REST from another namespace", elsewhere, src, p.ContainerPort, corev1.ProtocolTCP)
						continue
					}
					want(false, "from outside the cluster", world, src, p.ContainerPort, corev1.ProtocolTCP)
					want(false, "from another namespace, even with opsuite's labels", elsewhere, src, p.ContainerPort, corev1.ProtocolTCP)
					if p.Name == "http" || p.Name == "monitor" {
						want(true, "metrics scrape", scraper, src, p.ContainerPort, corev1.ProtocolTCP)
					} else {
						want(false, "scraper beyond metrics", scraper, src, p.ContainerPort, corev1.ProtocolTCP)
					}
				}
			}

			// gRPC between the components: only what is configured.
			for _, from := range ws {
				for _, to := range ws {
					grpc := namedPort(to, "grpc")
					if from.String() == to.String() || grpc == 0 || to.template.Labels[labelName] != "opsuite" {
						continue
					}
					if !callers[from.String()+"->"+to.String()] {
						want(false, "gRPC nobody configured", m.pod(from), m.pod(to), grpc, corev1.ProtocolTCP)
					}
				}
			}

			// NATS: routes between its pods only.
			if nats, ok := byComponent["jetstream"]; ok {
				cluster := namedPort(nats, "cluster")
				want(true, "NATS route", m.pod(nats), m.pod(nats), cluster, corev1.ProtocolTCP)
				for _, w := range ws {
					if w.String() != nats.String() {
						want(false, "NATS route from a client", m.pod(w), m.pod(nats), cluster, corev1.ProtocolTCP)
					}
				}
			} else {
				t.Errorf("no NATS workload (component jetstream)")
			}

			// The outside world: the deployer reaches the API server only.
			for c, need := range map[string][]int32{"healthchecker": {80, 443, 8080}, "monitor": {80, 443, 9100}, "pipelinerunner": {443, 22}} {
				if w, ok := byComponent[c]; ok {
					for _, port := range need {
						want(true, c+" reaches the world", m.pod(w), world, port, corev1.ProtocolTCP)
					}
				}
			}
			if w, ok := byComponent["deployer"]; ok {
				want(true, "deployer to the API server", m.pod(w), apiServer, 443, corev1.ProtocolTCP)
				want(true, "deployer to the API server", m.pod(w), apiServer, 6443, corev1.ProtocolTCP)
				want(false, "deployer to the world", m.pod(w), world, 80, corev1.ProtocolTCP)
			}
			for _, c := range []string{"gateway", "logaggregator"} {
				if w, ok := byComponent[c]; ok {
					want(false, c+" to the world", m.pod(w), world, 443, corev1.ProtocolTCP)
				}
			}
			if t.Failed() {
				return
			}
			t.Logf("%d configured calls allowed; default deny holds for the rest", len(cs))
		})
	}
}
