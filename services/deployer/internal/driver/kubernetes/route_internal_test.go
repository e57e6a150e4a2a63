package kubernetes

import (
	"encoding/json"
	"errors"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

func TestGatewayValidation(t *testing.T) {
	tests := []struct {
		gateway string
		ok      bool
	}{
		{"", true},
		{"infra/public", true},
		{"infra/public.gw-1", true},
		{"public", false},
		{"infra/", false},
		{"/public", false},
		{"infra/public/extra", false},
		{"Infra/public", false},
		{"infra/Public_GW", false},
		{"in.fra/public", false}, // a namespace is a DNS-1123 label
	}
	for _, tc := range tests {
		t.Run(tc.gateway, func(t *testing.T) {
			v := validation.New("test")
			validateTarget(v, Target{App: "shop", Environment: "prod", Gateway: tc.gateway})
			err := invalid(v)
			if (err == nil) != tc.ok {
				t.Fatalf("gateway %q: %v, want ok=%v", tc.gateway, err, tc.ok)
			}
			var ve *validation.Error
			if err != nil && (!errors.As(err, &ve) || ve.Fields[0].Field != "gateway" || !errors.Is(err, driver.ErrInvalidSpec)) {
				t.Errorf("gateway %q: %v, want a gateway field wrapping ErrInvalidSpec", tc.gateway, err)
			}
		})
	}
}

func TestGatewayNeedsATCPPort(t *testing.T) {
	tg := Target{App: "shop", Environment: "prod", Gateway: "infra/public"}
	for _, tc := range []struct {
		name  string
		ports []driver.Port
		ok    bool
	}{
		{"tcp", []driver.Port{{Name: "http", ContainerPort: 8080}}, true},
		{"udp then tcp", []driver.Port{{Name: "dns", ContainerPort: 53, Protocol: "udp"}, {ContainerPort: 8080, Protocol: "TCP"}}, true},
		{"udp only", []driver.Port{{Name: "dns", ContainerPort: 53, Protocol: "udp"}}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := goodWorkload()
			w.Ports = tc.ports
			v := validation.New("test")
			validateTarget(v, tg)
			validateWorkload(v, &w)
			validateRouteWorkload(v, tg, &w)
			if err := invalid(v); (err == nil) != tc.ok {
				t.Errorf("ports %v: %v, want ok=%v", tc.ports, err, tc.ok)
			}
		})
	}
	// Without a Gateway a port-less workload is fine.
	v := validation.New("test")
	w := goodWorkload()
	w.Ports = nil
	validateRouteWorkload(v, Target{App: "shop", Environment: "prod"}, &w)
	if err := invalid(v); err != nil {
		t.Errorf("no gateway: %v", err)
	}
}

func TestRouteWeights(t *testing.T) {
	tests := []struct {
		slot, active string
		weight       int32
		blue, green  int32
	}{
		{SlotBlue, SlotBlue, 0, 100, 0},
		{SlotGreen, SlotBlue, 40, 0, 100}, // one slot: the weight does not matter
		{"", SlotBlue, 25, 75, 25},
		{"", SlotGreen, 25, 25, 75},
		{"", SlotBlue, 50, 50, 50},
		{"", SlotBlue, 1, 99, 1},
		{"", SlotBlue, 150, 0, 100},
		{"", SlotBlue, -5, 100, 0},
	}
	for _, tc := range tests {
		got := routeWeights(tc.slot, tc.active, tc.weight)
		want := map[string]int32{SlotBlue: tc.blue, SlotGreen: tc.green}
		if !maps.Equal(got, want) {
			t.Errorf("routeWeights(%q, %q, %d) = %v, want %v", tc.slot, tc.active, tc.weight, got, want)
		}
	}
}

func TestRoutePort(t *testing.T) {
	tests := []struct {
		name  string
		ports []corev1.ContainerPort
		want  int32
		ok    bool
	}{
		{"http by name", []corev1.ContainerPort{{Name: "grpc", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}, {Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}, 8080, true},
		{"first tcp", []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {Name: "web", ContainerPort: 3000}}, 3000, true},
		{"udp named http", []corev1.ContainerPort{{Name: "http", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 80, Protocol: corev1.ProtocolTCP}}, 80, true},
		{"no tcp", []corev1.ContainerPort{{ContainerPort: 53, Protocol: corev1.ProtocolUDP}}, 0, false},
	}
	for _, tc := range tests {
		got, ok := routePort(tc.ports)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: routePort = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRouteObject checks the HTTPRoute as it goes to the API server: its
// JSON document, then read back by the status code.
func TestRouteObject(t *testing.T) {
	tg := Target{App: "shop", Environment: "prod", Namespace: "apps", Gateway: "infra/public"}
	u, err := tg.routeObject(map[string]int32{SlotBlue: 8080, SlotGreen: 9090}, map[string]int32{SlotBlue: 100, SlotGreen: 0})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute",` +
		`"metadata":{"labels":{"opsuite.app":"shop","opsuite.environment":"prod","opsuite.managed-by":"opsuite-deployer"},"name":"shop-prod","namespace":"apps"},` +
		`"spec":{"parentRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"public","namespace":"infra"}],` +
		`"rules":[{"backendRefs":[{"kind":"Service","name":"shop-prod-blue","port":8080,"weight":100},{"kind":"Service","name":"shop-prod-green","port":9090,"weight":0}]}]}}`
	if string(raw) != want {
		t.Errorf("httproute:\n got %s\nwant %s", raw, want)
	}
	if u.GetName() != "shop-prod" || u.GetNamespace() != "apps" || !ours(u, tg) {
		t.Errorf("metadata %s/%s labels %v", u.GetNamespace(), u.GetName(), u.GetLabels())
	}

	u, err = tg.routeObject(map[string]int32{SlotBlue: 8080, SlotGreen: 8080}, routeWeights("", SlotGreen, 25))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tg.routeStatusOf(u)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Name != "shop-prod" || rs.Gateway != "infra/public" || !maps.Equal(rs.Weights, map[string]int32{SlotBlue: 25, SlotGreen: 75}) || rs.Accepted != "" {
		t.Errorf("route status = %+v", rs)
	}
}

func TestRouteStatusOfAControllersReport(t *testing.T) {
	tg := Target{App: "shop", Environment: "prod", Gateway: "infra/public"}
	doc := `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute",
	  "metadata":{"name":"shop","namespace":"shop-prod"},
	  "spec":{"parentRefs":[{"name":"public","namespace":"infra"}],
	    "rules":[{"backendRefs":[{"name":"shop-blue","port":80,"weight":30},{"name":"shop-green","port":80}]}]},
	  "status":{"parents":[
	    {"parentRef":{"name":"other","namespace":"infra"},"controllerName":"x.example/gw","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]},
	    {"parentRef":{"name":"public","namespace":"infra"},"controllerName":"x.example/gw","conditions":[
	      {"type":"ResolvedRefs","status":"True","reason":"ResolvedRefs","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"},
	      {"type":"Accepted","status":"False","reason":"NotAllowedByListeners","message":"namespace shop-prod not allowed","lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}`
	var u unstructured.Unstructured
	if err := json.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	rs, err := tg.routeStatusOf(&u)
	if err != nil {
		t.Fatal(err)
	}
	// A missing weight is the API's default, 1.
	if !maps.Equal(rs.Weights, map[string]int32{SlotBlue: 30, SlotGreen: 1}) {
		t.Errorf("weights = %v", rs.Weights)
	}
	if rs.Accepted != "False" || rs.Reason != "NotAllowedByListeners" || rs.Message != "namespace shop-prod not allowed" {
		t.Errorf("accepted = %q %q %q, want the report for infra/public", rs.Accepted, rs.Reason, rs.Message)
	}
}

func TestSlotServiceSelectsOneSlot(t *testing.T) {
	tg := Target{App: "shop", Environment: "prod", ServiceType: ServiceLoadBalancer, ServiceAnnotations: map[string]string{"lb": "x"}}
	cfg := tg.slotServiceApply(SlotGreen, []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}})
	if *cfg.Name != "shop-green" || *cfg.Namespace != "shop-prod" || *cfg.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("service %s/%s type %s, want shop-prod/shop-green ClusterIP", *cfg.Namespace, *cfg.Name, *cfg.Spec.Type)
	}
	if !maps.Equal(cfg.Spec.Selector, tg.slotSelector(SlotGreen)) || len(cfg.Annotations) != 0 {
		t.Errorf("selector %v annotations %v", cfg.Spec.Selector, cfg.Annotations)
	}
	if len(cfg.Spec.Ports) != 1 || *cfg.Spec.Ports[0].Port != 8080 || cfg.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("ports %+v", cfg.Spec.Ports)
	}
}
