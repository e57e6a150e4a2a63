package kubernetes

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// The Gateway API resource the platform writes for weighted canaries.
const (
	GatewayAPIGroup   = "gateway.networking.k8s.io"
	gatewayAPIVersion = GatewayAPIGroup + "/v1"
	// routeDiscoveryTTL is how long a Platform trusts what discovery said
	// about HTTPRoutes being served: CRDs installed or removed are noticed
	// within it.
	routeDiscoveryTTL = 30 * time.Second
)

var httpRouteGVR = schema.GroupVersionResource{Group: GatewayAPIGroup, Version: "v1", Resource: "httproutes"}

// The part of a Gateway API v1 HTTPRoute the platform writes and reads:
// typed Go values, turned into an unstructured object by the runtime
// converter (never YAML text).
type (
	httpRoute struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Metadata   routeMeta       `json:"metadata"`
		Spec       httpRouteSpec   `json:"spec"`
		Status     *httpRouteState `json:"status,omitempty"`
	}
	routeMeta struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	httpRouteSpec struct {
		ParentRefs []parentRef     `json:"parentRefs"`
		Rules      []httpRouteRule `json:"rules"`
	}
	parentRef struct {
		Group     string `json:"group,omitempty"`
		Kind      string `json:"kind,omitempty"`
		Namespace string `json:"namespace,omitempty"`
		Name      string `json:"name"`
	}
	httpRouteRule struct {
		BackendRefs []backendRef `json:"backendRefs"`
	}
	backendRef struct {
		Group string `json:"group,omitempty"`
		Kind  string `json:"kind,omitempty"`
		Name  string `json:"name"`
		Port  int32  `json:"port,omitempty"`
		// Weight is never omitted: the API defaults a missing weight to 1,
		// and 0 (no traffic) must stay 0.
		Weight *int32 `json:"weight"`
	}
	httpRouteState struct {
		Parents []routeParentStatus `json:"parents,omitempty"`
	}
	routeParentStatus struct {
		ParentRef      parentRef          `json:"parentRef"`
		ControllerName string             `json:"controllerName"`
		Conditions     []metav1.Condition `json:"conditions,omitempty"`
	}
)

// RouteStatus is the environment's HTTPRoute, when its Gateway is set and
// the cluster serves the Gateway API.
type RouteStatus struct {
	Name string
	// Gateway is the parent Gateway, "namespace/name".
	Gateway string
	// Weights are the backend weights by slot (SlotBlue, SlotGreen); they
	// add up to 100 as the platform writes them.
	Weights map[string]int32
	// Accepted is the status of the Accepted condition a Gateway
	// controller reported for that Gateway ("True", "False", or "" while
	// none has), with its reason and message.
	Accepted string
	Reason   string
	Message  string
}

// gatewayRef splits Target.Gateway ("namespace/name").
func (t Target) gatewayRef() (ns, name string) {
	ns, name, _ = strings.Cut(t.Gateway, "/")
	return ns, name
}

func validateGateway(v *validation.Error, gw string) {
	if gw == "" {
		return
	}
	ns, name, ok := strings.Cut(gw, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		v.Add("gateway", "%q is not namespace/name", gw)
		return
	}
	for _, msg := range k8svalidation.IsDNS1123Label(ns) {
		v.Add("gateway", "namespace %q: %s", ns, msg)
	}
	for _, msg := range k8svalidation.IsDNS1123Subdomain(name) {
		v.Add("gateway", "name %q: %s", name, msg)
	}
}

// validateRouteWorkload: an HTTPRoute sends HTTP to a TCP port, so a
// workload routed by a Gateway needs one.
func validateRouteWorkload(v *validation.Error, t Target, w *Workload) {
	if t.Gateway == "" || w == nil {
		return
	}
	for _, p := range w.Ports {
		if protocol(p.Protocol) == corev1.ProtocolTCP {
			return
		}
	}
	v.Add("gateway", "an HTTPRoute needs a TCP port in the workload's ports")
}

// routePort is the Service port the HTTPRoute's backends use: the port
// named "http", else the first TCP port.
func routePort(ports []corev1.ContainerPort) (int32, bool) {
	for _, cp := range ports {
		if cp.Name == "http" && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
			return cp.ContainerPort, true
		}
	}
	for _, cp := range ports {
		if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func (t Target) routeName() string                  { return t.base() }
func (t Target) slotServiceName(slot string) string { return t.base() + "-" + slot }

// routeWeights are the backend weights: all on slot when it is set, else
// weight on the canary (the slot that is not active) and the rest on
// active.
func routeWeights(slot, active string, weight int32) map[string]int32 {
	if slot != "" {
		return map[string]int32{slot: 100, otherSlot(slot): 0}
	}
	weight = min(max(weight, 0), 100)
	return map[string]int32{active: 100 - weight, otherSlot(active): weight}
}

// routeObject renders the environment's HTTPRoute: one rule sending
// everything to the two slot Services (on ports, by slot) with weights.
func (t Target) routeObject(ports, weights map[string]int32) (*unstructured.Unstructured, error) {
	gns, gname := t.gatewayRef()
	r := httpRoute{
		APIVersion: gatewayAPIVersion,
		Kind:       "HTTPRoute",
		Metadata:   routeMeta{Name: t.routeName(), Namespace: t.namespace(), Labels: t.selector()},
		Spec: httpRouteSpec{
			ParentRefs: []parentRef{{Group: GatewayAPIGroup, Kind: "Gateway", Namespace: gns, Name: gname}},
		},
	}
	var rule httpRouteRule
	for _, s := range []string{SlotBlue, SlotGreen} {
		w := weights[s]
		rule.BackendRefs = append(rule.BackendRefs, backendRef{Kind: "Service", Name: t.slotServiceName(s), Port: ports[s], Weight: &w})
	}
	r.Spec.Rules = []httpRouteRule{rule}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&r)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: render httproute %s: %w", t.routeName(), err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// slotServiceApply renders the Service of one slot, the HTTPRoute's
// backend: ClusterIP, selecting that slot's pods only.
func (t Target) slotServiceApply(slot string, ports []corev1.ContainerPort) *corev1ac.ServiceApplyConfiguration {
	spec := corev1ac.ServiceSpec().WithType(corev1.ServiceTypeClusterIP).WithSelector(t.slotSelector(slot))
	for _, sp := range servicePorts(ports) {
		spec.WithPorts(sp)
	}
	return corev1ac.Service(t.slotServiceName(slot), t.namespace()).
		WithLabels(t.slotSelector(slot)).
		WithSpec(spec)
}

// routeStatusOf reads an HTTPRoute the platform wrote.
func (t Target) routeStatusOf(u *unstructured.Unstructured) (*RouteStatus, error) {
	var r httpRoute
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
		return nil, fmt.Errorf("kubernetes: read httproute %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	rs := &RouteStatus{Name: u.GetName(), Weights: map[string]int32{}}
	var parent parentRef
	if len(r.Spec.ParentRefs) > 0 {
		parent = r.Spec.ParentRefs[0]
		ns := parent.Namespace
		if ns == "" {
			ns = u.GetNamespace()
		}
		rs.Gateway = ns + "/" + parent.Name
	}
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			w := int32(1) // the API's default
			if b.Weight != nil {
				w = *b.Weight
			}
			for _, s := range []string{SlotBlue, SlotGreen} {
				if b.Name == t.slotServiceName(s) {
					rs.Weights[s] += w
				}
			}
		}
	}
	if r.Status != nil {
		for _, ps := range r.Status.Parents {
			pns := ps.ParentRef.Namespace
			if pns == "" {
				pns = u.GetNamespace()
			}
			if ps.ParentRef.Name != parent.Name || pns+"/"+ps.ParentRef.Name != rs.Gateway {
				continue
			}
			if c := meta(ps.Conditions, "Accepted"); c != nil {
				rs.Accepted, rs.Reason, rs.Message = string(c.Status), c.Reason, c.Message
			}
		}
	}
	return rs, nil
}

func meta(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// httpRoutesServed reports whether the cluster serves Gateway API v1
// HTTPRoutes, from discovery, remembered for routeDiscoveryTTL. A
// discovery failure other than "group not served" is an error, not a no:
// falling back to the replica ratio on a hiccup would leave a weighted
// HTTPRoute stale.
func (p *Platform) httpRoutesServed(ctx context.Context) (bool, error) {
	p.disc.mu.Lock()
	defer p.disc.mu.Unlock()
	if !p.disc.at.IsZero() && time.Since(p.disc.at) < routeDiscoveryTTL {
		return p.disc.served, nil
	}
	served := false
	list, err := p.cs.Discovery().ServerResourcesForGroupVersionWithContext(ctx, p.disc.groupVersion)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, apiErr("discover "+p.disc.groupVersion, err)
	default:
		for _, r := range list.APIResources {
			if r.Name == httpRouteGVR.Resource && r.Kind == "HTTPRoute" {
				served = true
			}
		}
	}
	if p.disc.at.IsZero() || served != p.disc.served {
		p.log.Info("gateway API discovered", "group_version", p.disc.groupVersion, "httproutes_served", served)
	}
	p.disc.served, p.disc.at = served, time.Now()
	return served, nil
}

// routed: the environment's traffic split goes through an HTTPRoute (its
// Gateway is set and the cluster serves HTTPRoutes).
func (p *Platform) routed(ctx context.Context, t Target) (bool, error) {
	if t.Gateway == "" {
		return false, nil
	}
	return p.httpRoutesServed(ctx)
}

// checkRouteClashes refuses, in route mode, a slot Service or HTTPRoute
// of the environment's names that the deployer does not own.
func (p *Platform) checkRouteClashes(ctx context.Context, t Target) error {
	on, err := p.routed(ctx, t)
	if err != nil || !on {
		return err
	}
	ns := t.namespace()
	for _, s := range []string{SlotBlue, SlotGreen} {
		svc, err := p.cs.CoreV1().Services(ns).Get(ctx, t.slotServiceName(s), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return apiErr("get service "+ns+"/"+t.slotServiceName(s), err)
		case !ours(svc, t):
			return &notOwnedError{"service", ns, svc.Name, "exists without the deployer's labels for this environment (the HTTPRoute's backend for slot " + s + ")"}
		}
	}
	r, err := p.dyn.Resource(httpRouteGVR).Namespace(ns).Get(ctx, t.routeName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return apiErr("get httproute "+ns+"/"+t.routeName(), err)
	case !ours(r, t):
		return &notOwnedError{"httproute", ns, r.GetName(), "exists without the deployer's labels for this environment"}
	}
	return nil
}

// applyRoute writes the slot Services, then the HTTPRoute with weights,
// each with server-side apply. ports are each slot's container ports.
func (p *Platform) applyRoute(ctx context.Context, t Target, ports map[string][]corev1.ContainerPort, weights map[string]int32) error {
	ns := t.namespace()
	backendPorts := map[string]int32{}
	for _, s := range []string{SlotBlue, SlotGreen} {
		port, ok := routePort(ports[s])
		if !ok {
			return fmt.Errorf("kubernetes: httproute of %s/%s: the %s slot's workload has no TCP port to route to: %w", t.App, t.Environment, s, driver.ErrInvalidSpec)
		}
		backendPorts[s] = port
	}
	for _, s := range []string{SlotBlue, SlotGreen} {
		if _, err := p.cs.CoreV1().Services(ns).Apply(ctx, t.slotServiceApply(s, ports[s]), p.applyOpts()); err != nil {
			return apiErr("apply service "+t.slotServiceName(s), err)
		}
	}
	obj, err := t.routeObject(backendPorts, weights)
	if err != nil {
		return err
	}
	if _, err := p.dyn.Resource(httpRouteGVR).Namespace(ns).Apply(ctx, t.routeName(), obj, p.applyOpts()); err != nil {
		return apiErr("apply httproute "+ns+"/"+t.routeName(), err)
	}
	p.log.Info("httproute weights applied", "namespace", ns, "httproute", t.routeName(), "gateway", t.Gateway,
		SlotBlue, weights[SlotBlue], SlotGreen, weights[SlotGreen])
	return nil
}

// dropRoute removes what route mode left behind once it is off (the
// Gateway option removed, or the Gateway API gone from the cluster): the
// deployer's HTTPRoute, which would keep sending the Gateway's traffic by
// stale weights, and its slot Services. A deployer without RBAC for
// HTTPRoutes cannot have written one: Forbidden is no error here.
func (p *Platform) dropRoute(ctx context.Context, t Target) error {
	ns := t.namespace()
	served, err := p.httpRoutesServed(ctx)
	if err != nil {
		return err
	}
	if served {
		r, err := p.dyn.Resource(httpRouteGVR).Namespace(ns).Get(ctx, t.routeName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		case err != nil:
			return apiErr("get httproute "+ns+"/"+t.routeName(), err)
		case ours(r, t):
			if err := p.deleteOwned(ctx, "httproute", ns, r, func(o metav1.DeleteOptions) error {
				return p.dyn.Resource(httpRouteGVR).Namespace(ns).Delete(ctx, r.GetName(), o)
			}); err != nil {
				return err
			}
			p.log.Info("httproute removed: canary weights no longer go through a Gateway", "namespace", ns, "httproute", r.GetName())
		}
	}
	svcs, err := p.cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(t.selector()).String()})
	if err != nil {
		return apiErr("list services of "+ns, err)
	}
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if (svc.Name != t.slotServiceName(SlotBlue) && svc.Name != t.slotServiceName(SlotGreen)) || !ours(svc, t) {
			continue
		}
		if err := p.deleteOwned(ctx, "service", ns, svc, func(o metav1.DeleteOptions) error {
			return p.cs.CoreV1().Services(ns).Delete(ctx, svc.Name, o)
		}); err != nil {
			return err
		}
	}
	return nil
}

// deleteOwned deletes one object the platform owns, with a UID
// precondition so that a replacement of the same name is never hit.
func (p *Platform) deleteOwned(ctx context.Context, kind, ns string, o metav1.Object, del func(metav1.DeleteOptions) error) error {
	uid := o.GetUID()
	bg := metav1.DeletePropagationBackground
	err := del(metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiErr("delete "+kind+" "+ns+"/"+o.GetName(), err)
	}
	return nil
}

// deleteRoutes removes the environment's HTTPRoutes (Delete). Without the
// Gateway option a Forbidden list is logged and skipped: a deployer
// without RBAC for HTTPRoutes cannot have written any.
func (p *Platform) deleteRoutes(ctx context.Context, t Target) error {
	served, err := p.httpRoutesServed(ctx)
	if err != nil || !served {
		return err
	}
	ns := t.namespace()
	l, err := p.dyn.Resource(httpRouteGVR).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(t.selector()).String()})
	if apierrors.IsForbidden(err) && t.Gateway == "" {
		p.log.Warn("cannot list httproutes, skipping them", "namespace", ns, "err", err)
		return nil
	}
	if err != nil {
		return apiErr("list httproutes of "+ns, err)
	}
	for i := range l.Items {
		r := &l.Items[i]
		if !ours(r, t) {
			continue
		}
		if err := p.deleteOwned(ctx, "httproute", ns, r, func(o metav1.DeleteOptions) error {
			return p.dyn.Resource(httpRouteGVR).Namespace(ns).Delete(ctx, r.GetName(), o)
		}); err != nil {
			return err
		}
	}
	return nil
}
