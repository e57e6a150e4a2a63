package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/opsuite/opsuite/pkg/validation"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

func (p *Platform) applyOpts() metav1.ApplyOptions {
	// Force: the platform is the only writer of these fields and has
	// checked, before applying, that the objects are its own.
	return metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
}

// apiErr wraps an API error with what failed and the driver sentinel it
// amounts to.
func apiErr(what string, err error) error {
	switch {
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return fmt.Errorf("kubernetes: %s: %w: %w", what, driver.ErrInvalidSpec, err)
	case apierrors.IsServerTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err), isConnErr(err):
		return fmt.Errorf("kubernetes: %s: %w: %w", what, driver.ErrUnavailable, err)
	}
	return fmt.Errorf("kubernetes: %s: %w", what, err)
}

func isConnErr(err error) bool {
	var se apierrors.APIStatus
	return err != nil && !errors.As(err, &se) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func ours(m metav1.Object, t Target) bool {
	l := m.GetLabels()
	return l[driver.LabelManagedBy] == driver.ManagedByValue && l[driver.LabelApp] == t.App && l[driver.LabelEnvironment] == t.Environment
}

// prepare validates, makes sure the namespace exists and is usable, and
// that nothing the deployer does not own clashes with what it will write.
// Only operations that deploy a workload (w != nil) create the namespace;
// the others fail with driver.ErrNotFound when it is missing.
func (p *Platform) prepare(ctx context.Context, t Target, w *Workload, o *Options) error {
	v := validation.New("kubernetes deployment")
	validateTarget(v, t)
	if w != nil {
		validateWorkload(v, w)
		validateRouteWorkload(v, t, w)
	}
	if o != nil {
		validateOptions(v, *o)
	}
	if err := invalid(v); err != nil {
		return err
	}
	if err := p.ensureNamespace(ctx, t, w != nil); err != nil {
		return err
	}
	return p.checkClashes(ctx, t)
}

// Check validates an environment's target, workload and options and, when
// its namespace exists, that deploying there would touch nothing the
// deployer does not own: what every deploying operation checks first,
// without creating or changing anything. Bad input is a *validation.Error
// (gRPC InvalidArgument), a clash wraps ErrNotOwned (FailedPrecondition).
func (p *Platform) Check(ctx context.Context, t Target, w Workload, o Options) error {
	v := validation.New("kubernetes deployment")
	validateTarget(v, t)
	validateWorkload(v, &w)
	validateRouteWorkload(v, t, &w)
	validateOptions(v, o)
	if err := invalid(v); err != nil {
		return err
	}
	err := p.ensureNamespace(ctx, t, false)
	if errors.Is(err, driver.ErrNotFound) {
		return nil // nothing there yet: nothing to clash with
	}
	if err != nil {
		return err
	}
	return p.checkClashes(ctx, t)
}

func (p *Platform) ensureNamespace(ctx context.Context, t Target, create bool) error {
	ns := t.namespace()
	cur, err := p.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && !create:
		return fmt.Errorf("kubernetes: %s/%s: namespace %s does not exist: nothing deployed: %w", t.App, t.Environment, ns, driver.ErrNotFound)
	case apierrors.IsNotFound(err):
		cfg := corev1ac.Namespace(ns).WithLabels(t.selector())
		if _, err := p.cs.CoreV1().Namespaces().Apply(ctx, cfg, p.applyOpts()); err != nil {
			return apiErr("create namespace "+ns, err)
		}
		return nil
	case err != nil:
		return apiErr("get namespace "+ns, err)
	}
	if cur.DeletionTimestamp != nil {
		return &notOwnedError{"namespace", "", ns, "is being deleted; deploy again once it is gone"}
	}
	if t.ownNamespace() && !ours(cur, t) {
		return &notOwnedError{"namespace", "", ns, "exists and was not created by the deployer for this environment; name a namespace explicitly to deploy into it"}
	}
	return nil
}

// checkClashes refuses to go on when an object the deployer does not own
// has one of its names (with a Gateway, also the slot Services and the
// HTTPRoute), or when selectors overlap: a foreign Deployment, ReplicaSet
// or pod the deployer's Deployments would adopt or its Service would send
// traffic to, or a foreign Deployment selecting the deployer's pods.
func (p *Platform) checkClashes(ctx context.Context, t Target) error {
	ns := t.namespace()
	mine := map[string]bool{t.deploymentName(SlotBlue): true, t.deploymentName(SlotGreen): true}
	deps, err := p.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiErr("list deployments of "+ns, err)
	}
	podSets := []labels.Set{labels.Set(t.podLabels(SlotBlue, 1)), labels.Set(t.podLabels(SlotGreen, 1))}
	envSel := labels.SelectorFromSet(t.selector())
	for i := range deps.Items {
		d := &deps.Items[i]
		if mine[d.Name] {
			if !ours(d, t) {
				return &notOwnedError{"deployment", ns, d.Name, "exists without the deployer's labels for this environment"}
			}
			continue
		}
		if envSel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return &notOwnedError{"deployment", ns, d.Name, "has pods with this environment's labels"}
		}
		if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil && !s.Empty() {
			for _, ps := range podSets {
				if s.Matches(ps) {
					return &notOwnedError{"deployment", ns, d.Name, "has a selector (" + s.String() + ") that would adopt the deployer's pods"}
				}
			}
		}
	}
	svc, err := p.cs.CoreV1().Services(ns).Get(ctx, t.serviceName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return apiErr("get service "+ns+"/"+t.serviceName(), err)
	case !ours(svc, t):
		return &notOwnedError{"service", ns, svc.Name, "exists without the deployer's labels for this environment"}
	}
	// ReplicaSets and pods carrying the environment's labels must belong
	// to the deployer's Deployments, or they would be adopted and served.
	rss, err := p.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: envSel.String()})
	if err != nil {
		return apiErr("list replicasets of "+ns, err)
	}
	myRS := map[string]bool{}
	for _, rs := range rss.Items {
		ref := metav1.GetControllerOf(&rs)
		if ref == nil || ref.Kind != "Deployment" || !mine[ref.Name] {
			return &notOwnedError{"replicaset", ns, rs.Name, "carries this environment's labels but no Deployment of the deployer controls it"}
		}
		myRS[rs.Name] = true
	}
	pods, err := p.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: envSel.String()})
	if err != nil {
		return apiErr("list pods of "+ns, err)
	}
	for _, pod := range pods.Items {
		ref := metav1.GetControllerOf(&pod)
		if ref == nil || ref.Kind != "ReplicaSet" || !myRS[ref.Name] {
			return &notOwnedError{"pod", ns, pod.Name, "carries this environment's labels but no ReplicaSet of the deployer controls it"}
		}
	}
	return p.checkRouteClashes(ctx, t)
}

// activeSlot is the slot the Service selects, or "" before the first
// deploy; canary is true while both slots serve.
func (p *Platform) activeSlot(ctx context.Context, t Target) (slot string, canary bool, err error) {
	svc, err := p.cs.CoreV1().Services(t.namespace()).Get(ctx, t.serviceName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, apiErr("get service", err)
	}
	slot = svc.Annotations[AnnotationActiveSlot]
	if slot != SlotBlue && slot != SlotGreen {
		slot = SlotBlue
	}
	_, narrowed := svc.Spec.Selector[LabelSlot]
	return slot, !narrowed, nil
}

// Serving reports the revision of the Deployment the Service routes to (0
// before the first deploy) and, while a canary splits traffic between the
// two Deployments, the canary's revision (else 0).
func (p *Platform) Serving(ctx context.Context, t Target) (stable, canary int64, err error) {
	v := validation.New("target")
	validateTarget(v, t)
	if err := invalid(v); err != nil {
		return 0, 0, err
	}
	slot, split, err := p.activeSlot(ctx, t)
	if err != nil || slot == "" {
		return 0, 0, err
	}
	d, err := p.getDeployment(ctx, t, slot)
	if err != nil {
		return 0, 0, err
	}
	stable = revisionOf(d)
	if split {
		other, err := p.getDeployment(ctx, t, otherSlot(slot))
		if err != nil {
			return 0, 0, err
		}
		canary = revisionOf(other)
	}
	return stable, canary, nil
}

func (p *Platform) getDeployment(ctx context.Context, t Target, slot string) (*appsv1.Deployment, error) {
	d, err := p.cs.AppsV1().Deployments(t.namespace()).Get(ctx, t.deploymentName(slot), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, apiErr("get deployment "+t.deploymentName(slot), err)
	}
	return d, nil
}

func revisionOf(d *appsv1.Deployment) int64 {
	if d == nil {
		return 0
	}
	r, _ := strconv.ParseInt(d.Spec.Template.Labels[driver.LabelRevision], 10, 64)
	return r
}

// applyDeployment applies the slot's Deployment for w and waits for its
// rollout.
func (p *Platform) applyDeployment(ctx context.Context, t Target, slot string, w *Workload, replicas int32, o Options) error {
	since := time.Now()
	cfg := p.deploymentApply(t, slot, w, replicas, o)
	if _, err := p.cs.AppsV1().Deployments(t.namespace()).Apply(ctx, cfg, p.applyOpts()); err != nil {
		return apiErr("apply deployment "+t.deploymentName(slot), err)
	}
	p.log.Info("deployment applied", "namespace", t.namespace(), "deployment", t.deploymentName(slot), "revision", w.Revision, "replicas", replicas)
	return p.waitRollout(ctx, t.namespace(), t.deploymentName(slot), since)
}

// scaleSlot changes only the replica count of a slot's Deployment: the
// fields the platform applied before are extracted from the object's
// managed fields and applied again with the new count.
func (p *Platform) scaleSlot(ctx context.Context, t Target, slot string, replicas int32, wait bool) error {
	d, err := p.getDeployment(ctx, t, slot)
	if err != nil || d == nil {
		return err
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas == replicas && !wait {
		return nil
	}
	cfg, err := appsv1ac.ExtractDeployment(d, FieldManager)
	if err != nil {
		return fmt.Errorf("kubernetes: extract deployment %s: %w", d.Name, err)
	}
	if cfg.Spec == nil {
		cfg.WithSpec(appsv1ac.DeploymentSpec())
	}
	cfg.Spec.WithReplicas(replicas)
	since := time.Now()
	if _, err := p.cs.AppsV1().Deployments(d.Namespace).Apply(ctx, cfg, p.applyOpts()); err != nil {
		return apiErr("scale deployment "+d.Name, err)
	}
	if !wait {
		return nil
	}
	return p.waitRollout(ctx, d.Namespace, d.Name, since)
}

// route points the Service at slot ("" for both slots) in one apply: the
// selector changes atomically for every endpoint at once. With a Gateway
// on a cluster serving HTTPRoutes, the HTTPRoute's backend weights change
// first: all on slot, or, for both slots, weight percent on the canary
// (the slot that is not active) and the rest on active. Without one, an
// HTTPRoute left from an earlier Gateway setting is removed.
func (p *Platform) route(ctx context.Context, t Target, slot, active string, weight int32) error {
	d, err := p.getDeployment(ctx, t, active)
	if err != nil {
		return err
	}
	ports := containerPorts(d)
	on, err := p.routed(ctx, t)
	if err != nil {
		return err
	}
	switch {
	case on:
		// Each slot Service fronts its own slot's pods, with their ports.
		idle, err := p.getDeployment(ctx, t, otherSlot(active))
		if err != nil {
			return err
		}
		bySlot := map[string][]corev1.ContainerPort{active: ports, otherSlot(active): containerPorts(idle)}
		if idle == nil {
			bySlot[otherSlot(active)] = ports
		}
		if err := p.applyRoute(ctx, t, bySlot, routeWeights(slot, active, weight)); err != nil {
			return err
		}
	default:
		if t.Gateway != "" && slot == "" {
			p.log.Info("gateway set but the cluster serves no "+gatewayAPIVersion+" HTTPRoutes: the canary splits traffic by replica ratio",
				"namespace", t.namespace(), "gateway", t.Gateway)
		}
		if err := p.dropRoute(ctx, t); err != nil {
			return err
		}
	}
	if _, err := p.cs.CoreV1().Services(t.namespace()).Apply(ctx, t.serviceApply(slot, ports, active), p.applyOpts()); err != nil {
		return apiErr("apply service "+t.serviceName(), err)
	}
	p.log.Info("service routed", "namespace", t.namespace(), "service", t.serviceName(), "slot", slot, "active", active)
	return nil
}

// containerPorts are the ports of the app container of d (nil for none).
func containerPorts(d *appsv1.Deployment) []corev1.ContainerPort {
	if d == nil {
		return nil
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == containerName {
			return c.Ports
		}
	}
	return nil
}

// Rolling deploys w onto the serving Deployment and lets Kubernetes roll
// it with opts' maxSurge/maxUnavailable, watching until every pod runs w
// and is available. On the progress deadline it returns an error wrapping
// ErrProgressDeadline and leaves the Deployment as it stands: the caller
// decides (Rollback to the last good revision, or pause).
func (p *Platform) Rolling(ctx context.Context, t Target, w Workload, o Options) error {
	if err := p.prepare(ctx, t, &w, &o); err != nil {
		return err
	}
	slot, canary, err := p.activeSlot(ctx, t)
	if err != nil {
		return err
	}
	if slot == "" {
		slot = SlotBlue
	}
	if canary {
		return fmt.Errorf("kubernetes: %s/%s: a canary is in progress: promote or abort it first: %w", t.App, t.Environment, ErrNotReady)
	}
	if err := p.applyDeployment(ctx, t, slot, &w, o.Replicas, o); err != nil {
		if errors.Is(err, ErrProgressDeadline) {
			// Serve what is ready meanwhile.
			if rerr := p.route(ctx, t, slot, slot, 0); rerr != nil {
				p.log.Warn("route after failed rollout", "err", rerr)
			}
		}
		return err
	}
	if err := p.route(ctx, t, slot, slot, 0); err != nil {
		return err
	}
	// A blue-green or canary before may have left the other slot scaled.
	return p.scaleSlot(ctx, t, otherSlot(slot), 0, false)
}

// Rollback returns the serving Deployment to revision, taken from the
// ReplicaSets the Deployment keeps (its revision history), as `kubectl
// rollout undo` does, and waits for the rollout. ErrNoRevision when no
// kept ReplicaSet ran that revision.
func (p *Platform) Rollback(ctx context.Context, t Target, revision int64, o Options) error {
	if err := p.prepare(ctx, t, nil, &o); err != nil {
		return err
	}
	slot, _, err := p.activeSlot(ctx, t)
	if err != nil {
		return err
	}
	if slot == "" {
		return fmt.Errorf("kubernetes: rollback %s/%s: nothing deployed: %w", t.App, t.Environment, driver.ErrNotFound)
	}
	name := t.deploymentName(slot)
	sel := labels.SelectorFromSet(t.slotSelector(slot))
	rss, err := p.cs.AppsV1().ReplicaSets(t.namespace()).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return apiErr("list replicasets of "+name, err)
	}
	var best *appsv1.ReplicaSet
	bestN := int64(-1)
	for i := range rss.Items {
		rs := &rss.Items[i]
		ref := metav1.GetControllerOf(rs)
		if ref == nil || ref.Name != name || rs.Spec.Template.Labels[driver.LabelRevision] != strconv.FormatInt(revision, 10) {
			continue
		}
		n, _ := strconv.ParseInt(rs.Annotations["deployment.kubernetes.io/revision"], 10, 64)
		if n > bestN {
			best, bestN = rs, n
		}
	}
	if best == nil {
		return fmt.Errorf("kubernetes: rollback %s to revision %d: %w", name, revision, ErrNoRevision)
	}
	d, err := p.getDeployment(ctx, t, slot)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("kubernetes: rollback %s: deployment gone: %w", name, driver.ErrNotFound)
	}
	cfg, err := appsv1ac.ExtractDeployment(d, FieldManager)
	if err != nil {
		return fmt.Errorf("kubernetes: extract deployment %s: %w", name, err)
	}
	tmpl := best.Spec.Template.DeepCopy()
	delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	// The kept template is a typed object; its JSON is the same document as
	// the apply configuration's.
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return fmt.Errorf("kubernetes: encode kept template of %s: %w", best.Name, err)
	}
	var tac corev1ac.PodTemplateSpecApplyConfiguration
	if err := json.Unmarshal(raw, &tac); err != nil {
		return fmt.Errorf("kubernetes: decode kept template of %s: %w", best.Name, err)
	}
	cfg.Spec.Template = &tac
	cfg.Spec.WithReplicas(o.Replicas)
	if o.ProgressDeadline > 0 {
		cfg.Spec.WithProgressDeadlineSeconds(o.deadlineSeconds())
	}
	rev := strconv.FormatInt(revision, 10)
	cfg.WithLabels(map[string]string{driver.LabelRevision: rev}).WithAnnotations(map[string]string{AnnotationRevision: rev})
	since := time.Now()
	if _, err := p.cs.AppsV1().Deployments(t.namespace()).Apply(ctx, cfg, p.applyOpts()); err != nil {
		return apiErr("roll back deployment "+name, err)
	}
	p.log.Info("deployment rolled back", "namespace", t.namespace(), "deployment", name, "revision", revision, "replicaset", best.Name)
	return p.waitRollout(ctx, t.namespace(), name, since)
}

// Preview starts w on the idle slot at full size beside the serving one
// (blue-green) and waits until all its pods are available. The Service is
// not changed: Switch does that.
func (p *Platform) Preview(ctx context.Context, t Target, w Workload, o Options) error {
	if err := p.prepare(ctx, t, &w, &o); err != nil {
		return err
	}
	slot, _, err := p.activeSlot(ctx, t)
	if err != nil {
		return err
	}
	idle := SlotGreen
	if slot != "" {
		idle = otherSlot(slot)
	}
	return p.applyDeployment(ctx, t, idle, &w, o.Replicas, o)
}

// slotOf finds the slot whose Deployment runs revision.
func (p *Platform) slotOf(ctx context.Context, t Target, revision int64) (string, *appsv1.Deployment, error) {
	for _, s := range []string{SlotBlue, SlotGreen} {
		d, err := p.getDeployment(ctx, t, s)
		if err != nil {
			return "", nil, err
		}
		if d != nil && revisionOf(d) == revision {
			return s, d, nil
		}
	}
	return "", nil, fmt.Errorf("kubernetes: %s/%s: no deployment runs revision %d: %w", t.App, t.Environment, revision, ErrNoRevision)
}

// Switch points the Service at the slot running revision, in one atomic
// selector change (with a Gateway, the HTTPRoute's weights too: 100 on
// that slot). The other slot keeps running (instant switch back)
// until Retire.
func (p *Platform) Switch(ctx context.Context, t Target, revision int64) error {
	if err := p.prepare(ctx, t, nil, nil); err != nil {
		return err
	}
	slot, d, err := p.slotOf(ctx, t, revision)
	if err != nil {
		return err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if want == 0 || d.Status.AvailableReplicas < want {
		return fmt.Errorf("kubernetes: switch %s/%s to revision %d: %d of %d pods available: %w",
			t.App, t.Environment, revision, d.Status.AvailableReplicas, want, ErrNotReady)
	}
	return p.route(ctx, t, slot, slot, 0)
}

// ErrNotReady: a switch was asked to a revision whose pods are not all
// available.
var ErrNotReady = errors.New("revision not ready")

// Retire scales the slot the Service does not select to zero (after
// blue-green's scale_down_delay); its Deployment and ReplicaSets stay for
// a later rollback.
func (p *Platform) Retire(ctx context.Context, t Target) error {
	if err := p.prepare(ctx, t, nil, nil); err != nil {
		return err
	}
	slot, canary, err := p.activeSlot(ctx, t)
	if err != nil || slot == "" {
		return err
	}
	if canary {
		return fmt.Errorf("kubernetes: retire %s/%s: a canary is in progress: %w", t.App, t.Environment, ErrNotReady)
	}
	return p.scaleSlot(ctx, t, otherSlot(slot), 0, true)
}

// CanaryReplicas splits total replicas at weight percent for the canary:
// at least one canary pod for any weight above 0, at least one stable pod
// for any weight below 100.
func CanaryReplicas(total, weight int32) (canary, stable int32) {
	weight = min(max(weight, 0), 100)
	switch {
	case total <= 0:
		return 0, 0
	case weight == 0:
		return 0, total
	case weight == 100:
		return total, 0
	}
	c := int32(math.Round(float64(total) * float64(weight) / 100))
	c = max(c, 1)
	if total > 1 {
		c = min(c, total-1)
	}
	return c, max(total-c, 0)
}

// Canary runs w on the idle slot with the share of o.Replicas that weight
// asks for and the stable slot with the rest; the Service selects both, so
// traffic splits by replica ratio. With a Gateway on a cluster serving
// HTTPRoutes, the HTTPRoute sends exactly weight percent to the canary's
// slot Service and the rest to the stable one, while the replicas still
// split by ratio (capacity follows traffic). Weight 100 promotes: the
// canary slot at full size, the Service narrowed (and the HTTPRoute
// weighted 100) to it, the stable slot scaled to zero. Weight 0 is an
// abort: the stable slot at full size and only it served.
func (p *Platform) Canary(ctx context.Context, t Target, w Workload, weight int32, o Options) error {
	if err := p.prepare(ctx, t, &w, &o); err != nil {
		return err
	}
	if weight < 0 || weight > 100 {
		v := validation.New("canary")
		v.Add("weight", "%d is not within 0..100", weight)
		return invalid(v)
	}
	stable, canaryOn, err := p.activeSlot(ctx, t)
	if err != nil {
		return err
	}
	if stable == "" {
		return fmt.Errorf("kubernetes: canary of %s/%s: nothing deployed to compare with: %w", t.App, t.Environment, driver.ErrNotFound)
	}
	cslot := otherSlot(stable)
	if d, err := p.getDeployment(ctx, t, cslot); err != nil {
		return err
	} else if canaryOn && d != nil && revisionOf(d) != w.Revision {
		return fmt.Errorf("kubernetes: canary of %s/%s: revision %d is in canary, not %d: %w", t.App, t.Environment, revisionOf(d), w.Revision, ErrNotReady)
	}
	nCanary, nStable := CanaryReplicas(o.Replicas, weight)
	// Grow the canary first, then shrink stable: capacity never dips.
	if err := p.applyDeployment(ctx, t, cslot, &w, nCanary, o); err != nil {
		return err
	}
	switch weight {
	case 100:
		if err := p.route(ctx, t, cslot, cslot, 0); err != nil {
			return err
		}
	case 0:
		if err := p.route(ctx, t, stable, stable, 0); err != nil {
			return err
		}
	default:
		if err := p.route(ctx, t, "", stable, weight); err != nil {
			return err
		}
	}
	return p.scaleSlot(ctx, t, stable, nStable, true)
}

// Abort gives all traffic back to the slot running stableRevision at once
// (Service selector and, with a Gateway, HTTPRoute weight 100), brings it
// to o.Replicas, then scales the other slot to zero. It is the rollback of blue-green and canary: no steps replayed.
func (p *Platform) Abort(ctx context.Context, t Target, stableRevision int64, o Options) error {
	if err := p.prepare(ctx, t, nil, &o); err != nil {
		return err
	}
	slot, _, err := p.slotOf(ctx, t, stableRevision)
	if err != nil {
		return err
	}
	if err := p.route(ctx, t, slot, slot, 0); err != nil {
		return err
	}
	if err := p.scaleSlot(ctx, t, slot, o.Replicas, true); err != nil {
		return err
	}
	return p.scaleSlot(ctx, t, otherSlot(slot), 0, true)
}

// Scale sets the serving slot's replica count and waits until the pods
// are available.
func (p *Platform) Scale(ctx context.Context, t Target, replicas int32) error {
	slot, err := p.servingSlot(ctx, t, "scale", &Options{Replicas: replicas})
	if err != nil {
		return err
	}
	return p.scaleSlot(ctx, t, slot, replicas, true)
}

// servingSlot prepares o for t and returns the slot serving it, for an
// operation (op) on the whole serving revision: one that needs a revision
// deployed and no canary in progress.
func (p *Platform) servingSlot(ctx context.Context, t Target, op string, o *Options) (string, error) {
	if err := p.prepare(ctx, t, nil, o); err != nil {
		return "", err
	}
	slot, canary, err := p.activeSlot(ctx, t)
	if err != nil {
		return "", err
	}
	if slot == "" {
		return "", fmt.Errorf("kubernetes: %s %s/%s: nothing deployed: %w", op, t.App, t.Environment, driver.ErrNotFound)
	}
	if canary {
		return "", fmt.Errorf("kubernetes: %s %s/%s: a canary is in progress: %w", op, t.App, t.Environment, ErrNotReady)
	}
	return slot, nil
}

// Delete removes everything the deployer created for the environment: the
// HTTPRoute (when the cluster serves them), the Services and both
// Deployments (their ReplicaSets and pods go with them
// through owner references), then the namespace when the deployer created
// it. It waits until the pods are gone (and the namespace, when deleted).
// Objects without the deployer's labels are never touched.
func (p *Platform) Delete(ctx context.Context, t Target) error {
	v := validation.New("target")
	validateTarget(v, t)
	if err := invalid(v); err != nil {
		return err
	}
	ns := t.namespace()
	nsObj, err := p.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		p.forgetNamespace(ns)
		return nil
	}
	if err != nil {
		return apiErr("get namespace "+ns, err)
	}
	sel := labels.SelectorFromSet(t.selector()).String()
	bg := metav1.DeletePropagationBackground
	del := func(kind string, list func() ([]metav1.Object, error), remove func(name string, o metav1.DeleteOptions) error) error {
		objs, err := list()
		if err != nil {
			return apiErr("list "+kind+" of "+ns, err)
		}
		for _, o := range objs {
			if !ours(o, t) {
				continue
			}
			uid := o.GetUID()
			err := remove(o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) {
				return apiErr("delete "+kind+" "+ns+"/"+o.GetName(), err)
			}
		}
		return nil
	}
	if err := p.deleteRoutes(ctx, t); err != nil {
		return err
	}
	if err := del("services", func() ([]metav1.Object, error) {
		l, err := p.cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, err
		}
		out := make([]metav1.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	}, func(name string, o metav1.DeleteOptions) error {
		return p.cs.CoreV1().Services(ns).Delete(ctx, name, o)
	}); err != nil {
		return err
	}
	if err := del("deployments", func() ([]metav1.Object, error) {
		l, err := p.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, err
		}
		out := make([]metav1.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	}, func(name string, o metav1.DeleteOptions) error {
		return p.cs.AppsV1().Deployments(ns).Delete(ctx, name, o)
	}); err != nil {
		return err
	}
	p.log.Info("application environment deleted", "namespace", ns, "app", t.App, "env", t.Environment)
	if err := p.waitPodsGone(ctx, ns, labels.SelectorFromSet(t.selector())); err != nil {
		return err
	}
	p.forgetNamespace(ns)
	if !t.ownNamespace() || !ours(nsObj, t) {
		return nil
	}
	uid := nsObj.UID
	err = p.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiErr("delete namespace "+ns, err)
	}
	return p.waitNamespaceGone(ctx, ns)
}
