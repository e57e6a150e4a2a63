package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

// manifestsDir holds every Kubernetes manifest the project ships.
const manifestsDir = "../../../../../deployments/kubernetes"

// The deployer's identity in the shipped manifests (rbac/serviceaccount.yaml).
const (
	deployerSANamespace = "opsuite-system"
	deployerSAName      = "opsuite-deployer"
)

// object is one manifest object: as built (unstructured, what is sent to
// the API server) and decoded strictly into its Go type.
type object struct {
	source string // the kustomization or loose file it came from
	u      *unstructured.Unstructured
	typed  runtime.Object
}

func (o object) String() string {
	return fmt.Sprintf("%s: %s %s", o.source, o.u.GetKind(), key(o.u.GetNamespace(), o.u.GetName()))
}

func key(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// build is what one kustomization (or one loose YAML file) produces.
type build struct {
	name string // path below deployments/kubernetes; "loose:<file>" for a file no kustomization reads
	objs []object
}

// manifestSet is everything under deployments/kubernetes: every
// kustomization built in process, plus any YAML file none of them reads.
type manifestSet struct {
	builds     []build
	components []string // Component directories, built only through the kustomizations using them
	unused     []string // Component directories no kustomization reads
}

func (s manifestSet) build(t testing.TB, name string) build {
	t.Helper()
	for _, b := range s.builds {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("no kustomization %s under %s", name, manifestsDir)
	return build{}
}

// recordingFS is the disk, remembering every file kustomize reads, so a
// YAML file that no kustomization includes is found and checked on its own.
type recordingFS struct {
	filesys.FileSystem
	mu   sync.Mutex
	read map[string]bool
}

func (r *recordingFS) ReadFile(path string) ([]byte, error) {
	if abs, err := filepath.Abs(path); err == nil {
		r.mu.Lock()
		r.read[filepath.Clean(abs)] = true
		r.mu.Unlock()
	}
	return r.FileSystem.ReadFile(path)
}

func isYAML(path string) bool {
	return strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")
}

// loadManifests builds every kustomization under manifestsDir with
// kustomize's krusty (as `kubectl apply -k` would), then decodes every YAML
// file no build read as loose manifests. Every object is decoded strictly
// (unknown fields fail) into the client-go type of its kind; a kind that
// is not a built-in API fails too, since the harness (and a plain cluster)
// has no CRDs installed.
func loadManifests(t testing.TB) manifestSet {
	t.Helper()
	root, err := filepath.Abs(manifestsDir)
	if err != nil {
		t.Fatal(err)
	}
	var dirs, yamls []string
	kustFiles := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			for _, n := range konfig.RecognizedKustomizationFileNames() {
				if _, err := os.Stat(filepath.Join(path, n)); err == nil {
					dirs = append(dirs, path)
					kustFiles[filepath.Join(path, n)] = true
				}
			}
			return nil
		}
		if isYAML(path) {
			yamls = append(yamls, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	var set manifestSet
	rec := &recordingFS{FileSystem: filesys.MakeFsOnDisk(), read: map[string]bool{}}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	for _, dir := range dirs {
		rel, _ := filepath.Rel(root, dir)
		if isComponent(t, dir) {
			set.components = append(set.components, dir)
			continue
		}
		rm, err := k.Run(rec, dir)
		if err != nil {
			t.Fatalf("kustomize build %s: %v", rel, err)
		}
		b := build{name: rel}
		for _, r := range rm.Resources() {
			data, err := r.MarshalJSON()
			if err != nil {
				t.Fatalf("kustomize build %s: %s: %v", rel, r.CurId(), err)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(data); err != nil {
				t.Fatalf("kustomize build %s: %s: %v", rel, r.CurId(), err)
			}
			b.objs = append(b.objs, typedObject(t, rel, u))
		}
		if len(b.objs) == 0 {
			t.Fatalf("kustomize build %s: no objects", rel)
		}
		set.builds = append(set.builds, b)
	}
	for _, dir := range set.components {
		used := false
		for f := range rec.read {
			used = used || strings.HasPrefix(f, dir+string(filepath.Separator))
		}
		if !used {
			set.unused = append(set.unused, dir)
		}
	}
	for _, path := range yamls {
		if rec.read[path] || kustFiles[path] {
			continue
		}
		rel, _ := filepath.Rel(root, path)
		b := build{name: "loose:" + rel}
		for _, u := range decodeFile(t, path) {
			b.objs = append(b.objs, typedObject(t, b.name, u))
		}
		set.builds = append(set.builds, b)
	}
	if len(set.builds) == 0 {
		t.Fatalf("no manifests under %s", manifestsDir)
	}
	return set
}

// isComponent reports whether dir holds a kustomize Component (built only
// as part of the kustomizations that list it).
func isComponent(t testing.TB, dir string) bool {
	for _, n := range konfig.RecognizedKustomizationFileNames() {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096).Decode(&head); err != nil {
			t.Fatalf("%s: %v", filepath.Join(dir, n), err)
		}
		return head.Kind == "Component"
	}
	return false
}

func decodeFile(t testing.TB, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) > 0 {
			out = append(out, &u)
		}
	}
	return out
}

func typedObject(t testing.TB, source string, u *unstructured.Unstructured) object {
	t.Helper()
	gvk := u.GroupVersionKind()
	typed, err := scheme.Scheme.New(gvk)
	if err != nil {
		t.Fatalf("%s: %s %s: not a built-in Kubernetes API (%v); ship no objects of CRD kinds", source, gvk, u.GetName(), err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, typed, true); err != nil {
		t.Fatalf("%s: %s %s: %v", source, gvk.Kind, u.GetName(), err)
	}
	return object{source: source, u: u, typed: typed}
}

// objectsOf returns the build's objects of type T.
func objectsOf[T runtime.Object](b build) []T {
	var out []T
	for _, o := range b.objs {
		if v, ok := o.typed.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// newApplier talks to the harness as its admin; every warning the API
// server sends back (deprecated APIs, Pod Security violations of a
// workload's template) is recorded in warnings.
func newApplier(t testing.TB, rc *rest.Config, warnings *warningLog) *applier {
	rc = rest.CopyConfig(rc)
	rc.WarningHandlerWithContext = warnings
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(suite.admin.Discovery()))}
}

type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningLog) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// take returns the warnings recorded since the last call.
func (w *warningLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

func (a *applier) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if mapping.Scope.Name() == "namespace" {
		return a.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace()), nil
	}
	return a.dyn.Resource(mapping.Resource), nil
}

// apply server-side applies u; dryRun asks the API server to run every
// admission and validation step without persisting.
func (a *applier) apply(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	ri, err := a.resource(u)
	if err != nil {
		return err
	}
	data, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "opsuite-manifest-test", Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, opts)
	return err
}

func (a *applier) remove(ctx context.Context, t testing.TB, u *unstructured.Unstructured) {
	ri, err := a.resource(u)
	if err != nil {
		t.Errorf("remove %s %s: %v", u.GetKind(), u.GetName(), err)
		return
	}
	if err := ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("remove %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// waitGone waits (bounded) until u no longer exists: a namespace takes the
// namespace controller's round to go.
func (a *applier) waitGone(ctx context.Context, t testing.TB, u *unstructured.Unstructured) {
	ri, err := a.resource(u)
	if err != nil {
		return
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Errorf("%s %s still there after cleanup: %v", u.GetKind(), u.GetName(), err)
			return
		}
	}
}

// createdForReal are the kinds the dry run creates for real: the
// namespaces the rest lives in, and the ServiceAccounts the pods run as
// (admission refuses a pod whose ServiceAccount does not exist).
func createdForReal(kind string) bool { return kind == "Namespace" || kind == "ServiceAccount" }

func isRBAC(kind string) bool {
	return kind == "ClusterRole" || kind == "ClusterRoleBinding" || kind == "Role" || kind == "RoleBinding"
}

// TestManifestsPassServerSideDryRun sends every object of every
// kustomization build (base, each overlay, rbac/) and of any loose YAML
// file to the harness's API server as a server-side apply with
// DryRun=All, so every validation and admission step runs; a warning
// counts as a failure. Each workload's pod template is also dry-run as a
// Pod in its namespace, which Pod Security admission ("restricted" on
// opsuite-system) checks. Then each distinct RBAC variant is applied for
// real and proven sufficient and no wider: the driver, running as the
// deployer's ServiceAccount (impersonated), deploys, reports and deletes
// an application, and is refused what it never needs.
func TestManifestsPassServerSideDryRun(t *testing.T) {
	needCluster(t)
	set := loadManifests(t)
	warnings := &warningLog{}
	a := newApplier(t, suite.rc, warnings)
	ctx := ctxFor(t, 5*time.Minute)

	// Namespaces and ServiceAccounts, for real (each dry-run first).
	var created []*unstructured.Unstructured
	seen := map[string]bool{}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		for _, u := range slices.Backward(created) {
			a.remove(cctx, t, u)
		}
		for _, u := range created {
			if u.GetKind() == "Namespace" {
				a.waitGone(cctx, t, u)
			}
		}
	})
	for _, kind := range []string{"Namespace", "ServiceAccount"} {
		for _, b := range set.builds {
			for _, o := range b.objs {
				if o.u.GetKind() != kind {
					continue
				}
				if err := a.apply(ctx, o.u, true); err != nil {
					t.Fatalf("%s: dry run: %v", o, err)
				}
				if err := a.apply(ctx, o.u, false); err != nil {
					t.Fatalf("%s: create: %v", o, err)
				}
				if k := kind + "/" + key(o.u.GetNamespace(), o.u.GetName()); !seen[k] {
					seen[k] = true
					created = append(created, o.u)
				}
			}
		}
	}
	for _, msg := range warnings.take() {
		t.Errorf("warning creating namespaces and service accounts: %s", msg)
	}

	total := 0
	for _, b := range set.builds {
		t.Run(b.name, func(t *testing.T) {
			for _, o := range b.objs {
				if createdForReal(o.u.GetKind()) {
					continue
				}
				total++
				if err := a.apply(ctx, o.u, true); err != nil {
					t.Errorf("%s: dry run: %v", o, err)
				}
				for _, msg := range warnings.take() {
					t.Errorf("%s: dry run warns: %s", o, msg)
				}
			}
			for _, pod := range podsOf(t, b) {
				total++
				if err := a.apply(ctx, pod, true); err != nil {
					t.Errorf("%s: dry run of its pod %s: %v", b.name, pod.GetName(), err)
				}
				for _, msg := range warnings.take() {
					t.Errorf("%s: dry run of its pod %s warns: %s", b.name, pod.GetName(), msg)
				}
			}
		})
	}
	t.Logf("dry-run %d objects (pods from templates included) of %d builds; created %d namespaces and service accounts", total, len(set.builds), len(created))
	if t.Failed() {
		return
	}

	// RBAC, for real: each distinct variant on its own, the namespaced ones
	// first (nothing cluster-wide is bound yet, so nothing else can make
	// them pass).
	variants := rbacVariants(t, set)
	if len(variants) == 0 {
		t.Fatalf("no build binds the deployer's ServiceAccount %s/%s to a role", deployerSANamespace, deployerSAName)
	}
	for _, v := range variants {
		t.Run("rbac/"+v.name, func(t *testing.T) {
			for _, u := range v.objs {
				if err := a.apply(ctx, u, false); err != nil {
					t.Fatalf("apply %s %s: %v", u.GetKind(), key(u.GetNamespace(), u.GetName()), err)
				}
			}
			defer func() {
				cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for _, u := range slices.Backward(v.objs) {
					a.remove(cctx, t, u)
				}
			}()
			sa := rest.CopyConfig(suite.rc)
			sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + deployerSANamespace + ":" + deployerSAName}
			if v.namespace == "" {
				proveClusterRBAC(t, sa)
			} else {
				proveNamespacedRBAC(t, sa, v.namespace)
			}
		})
	}
}

// podsOf turns each workload's pod template into the Pod its controller
// would create (claim templates become the claims a StatefulSet makes).
func podsOf(t testing.TB, b build) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	add := func(owner metav1.Object, tmpl corev1.PodTemplateSpec, claims []corev1.PersistentVolumeClaim) {
		pod := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: owner.GetName() + "-0", Namespace: owner.GetNamespace(), Labels: tmpl.Labels, Annotations: tmpl.Annotations},
			Spec:       *tmpl.Spec.DeepCopy(),
		}
		for _, c := range claims {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
				Name:         c.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + pod.Name}},
			})
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	for _, d := range objectsOf[*appsv1.Deployment](b) {
		add(d, d.Spec.Template, nil)
	}
	for _, s := range objectsOf[*appsv1.StatefulSet](b) {
		add(s, s.Spec.Template, s.Spec.VolumeClaimTemplates)
	}
	for _, s := range objectsOf[*appsv1.DaemonSet](b) {
		add(s, s.Spec.Template, nil)
	}
	return out
}

// rbacVariant is one distinct set of roles and bindings for the deployer,
// with the builds that ship it.
type rbacVariant struct {
	name      string
	namespace string // the one namespace it confines the deployer to; empty for cluster-wide
	objs      []*unstructured.Unstructured
}

func rbacVariants(t testing.TB, set manifestSet) []rbacVariant {
	t.Helper()
	byKey := map[string]*rbacVariant{}
	var keys []string
	for _, b := range set.builds {
		var objs []*unstructured.Unstructured
		var sig []string
		binds := false
		namespaces := map[string]bool{}
		for _, o := range b.objs {
			if !isRBAC(o.u.GetKind()) {
				continue
			}
			data, err := o.u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			objs = append(objs, o.u)
			sig = append(sig, string(data))
			switch v := o.typed.(type) {
			case *rbacv1.ClusterRoleBinding:
				binds = binds || bindsDeployer(v.Subjects)
				if bindsDeployer(v.Subjects) {
					namespaces[""] = true
				}
			case *rbacv1.RoleBinding:
				if bindsDeployer(v.Subjects) {
					binds = true
					namespaces[v.Namespace] = true
				}
			}
		}
		if !binds {
			continue
		}
		if len(namespaces) != 1 {
			t.Fatalf("%s: the deployer is bound in %d scopes (%v); one variant per build: cluster-wide or one namespace", b.name, len(namespaces), namespaces)
		}
		var ns string
		for n := range namespaces {
			ns = n
		}
		slices.Sort(sig)
		k := strings.Join(sig, "\n")
		if v, ok := byKey[k]; ok {
			v.name += "," + b.name
			continue
		}
		byKey[k] = &rbacVariant{name: b.name, namespace: ns, objs: objs}
		keys = append(keys, k)
	}
	out := make([]rbacVariant, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	// Namespaced variants first: see TestManifestsPassServerSideDryRun.
	slices.SortStableFunc(out, func(a, b rbacVariant) int {
		return boolInt(a.namespace == "") - boolInt(b.namespace == "")
	})
	return out
}

func bindsDeployer(subjects []rbacv1.Subject) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == deployerSANamespace && s.Name == deployerSAName
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// proveClusterRBAC runs the driver as the ServiceAccount with the
// cluster-wide rules: one namespace per application environment, created
// and deleted by the driver.
func proveClusterRBAC(t *testing.T, sa *rest.Config) {
	p, err := k8sdriver.NewForConfig(t.Context(), sa, k8sdriver.Config{}, testLogger(t))
	if err != nil {
		t.Fatalf("platform as the service account: %v", err)
	}
	defer p.Close()
	tg := k8sdriver.Target{App: "rbac-" + suite.run, Environment: "test"}
	ctx := ctxFor(t, 90*time.Second)
	if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
		t.Fatalf("rolling as the service account: %v", err)
	}
	if err := p.Canary(ctx, tg, workload(2), 50, opts(2)); err != nil {
		t.Fatalf("canary as the service account: %v", err)
	}
	if err := p.Abort(ctx, tg, 1, opts(2)); err != nil {
		t.Fatalf("abort as the service account: %v", err)
	}
	if err := p.Rollback(ctx, tg, 1, opts(2)); err != nil {
		t.Fatalf("rollback as the service account: %v", err)
	}
	if st, err := p.Status(ctx, tg); err != nil || len(st.Pods) != 2 {
		t.Fatalf("status as the service account: %d pods, %v", len(st.Pods), err)
	}
	if err := p.Delete(ctx, tg); err != nil {
		t.Fatalf("delete as the service account: %v", err)
	}
	// Least privilege: what the driver never does is refused.
	forbidden(t, sa, []access{
		{verb: "list", gvr: schemaGVR("", "v1", "secrets"), ns: "default"},
		{verb: "list", gvr: schemaGVR("", "v1", "configmaps"), ns: "default"},
	})
}

// proveNamespacedRBAC runs the driver as the ServiceAccount confined to
// ns: applications name that namespace, which exists already.
func proveNamespacedRBAC(t *testing.T, sa *rest.Config, ns string) {
	p, err := k8sdriver.NewForConfig(t.Context(), sa, k8sdriver.Config{}, testLogger(t))
	if err != nil {
		t.Fatalf("platform as the service account: %v", err)
	}
	defer p.Close()
	tg := k8sdriver.Target{App: "rbacns-" + suite.run, Environment: "test", Namespace: ns}
	ctx := ctxFor(t, 90*time.Second)
	if err := p.Rolling(ctx, tg, workload(1), opts(1)); err != nil {
		t.Fatalf("rolling in %s as the service account: %v", ns, err)
	}
	if err := p.Canary(ctx, tg, workload(2), 50, opts(2)); err != nil {
		t.Fatalf("canary in %s as the service account: %v", ns, err)
	}
	if err := p.Abort(ctx, tg, 1, opts(2)); err != nil {
		t.Fatalf("abort in %s as the service account: %v", ns, err)
	}
	if st, err := p.Status(ctx, tg); err != nil || len(st.Pods) != 2 {
		t.Fatalf("status in %s as the service account: %d pods, %v", ns, len(st.Pods), err)
	}
	if err := p.Delete(ctx, tg); err != nil {
		t.Fatalf("delete in %s as the service account: %v", ns, err)
	}
	// Outside its namespace it may do nothing; inside, nothing it does not use.
	other := k8sdriver.Target{App: "rbacns-" + suite.run, Environment: "other"}
	if err := p.Rolling(ctx, other, workload(1), opts(1)); !apierrors.IsForbidden(err) {
		t.Errorf("rolling into a namespace of its own as the confined service account: %v, want Forbidden", err)
	}
	forbidden(t, sa, []access{
		{verb: "list", gvr: schemaGVR("", "v1", "namespaces")},
		{verb: "create", gvr: schemaGVR("", "v1", "namespaces"), name: "opsuite-rbac-probe-" + suite.run},
		{verb: "list", gvr: schemaGVR("apps", "v1", "deployments"), ns: "default"},
		{verb: "list", gvr: schemaGVR("", "v1", "pods")},
		{verb: "list", gvr: schemaGVR("", "v1", "secrets"), ns: ns},
		{verb: "list", gvr: schemaGVR("", "v1", "configmaps"), ns: ns},
	})
}

type access struct {
	verb string
	gvr  schema.GroupVersionResource
	ns   string
	name string
}

// forbidden checks each access is refused with 403 for the identity of rc.
func forbidden(t *testing.T, rc *rest.Config, as []access) {
	t.Helper()
	cl, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, ac := range as {
		ri := dynamic.ResourceInterface(cl.Resource(ac.gvr))
		if ac.ns != "" {
			ri = cl.Resource(ac.gvr).Namespace(ac.ns)
		}
		switch ac.verb {
		case "list":
			_, err = ri.List(t.Context(), metav1.ListOptions{})
		case "create":
			u := &unstructured.Unstructured{}
			u.SetAPIVersion(ac.gvr.GroupVersion().String())
			u.SetKind("Namespace")
			u.SetName(ac.name)
			_, err = ri.Create(t.Context(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		default:
			t.Fatalf("access %s: unknown verb", ac.verb)
		}
		if !apierrors.IsForbidden(err) {
			t.Errorf("service account may %s %s (namespace %q): %v, want Forbidden", ac.verb, ac.gvr.Resource, ac.ns, err)
		}
	}
}

func schemaGVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}
