package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

// manifestsDir holds every Kubernetes manifest the project ships.
const manifestsDir = "../../../../../deployments/kubernetes"

type manifest struct {
	file string
	obj  *unstructured.Unstructured
}

func readManifests(t testing.TB) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir(manifestsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
			if len(u.Object) == 0 {
				continue
			}
			out = append(out, manifest{file: path, obj: &u})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read manifests: %v", err)
	}
	if len(out) == 0 {
		t.Fatalf("no manifests under %s", manifestsDir)
	}
	// Namespaces first: the other objects live in them.
	slices.SortStableFunc(out, func(a, b manifest) int {
		return boolInt(b.obj.GetKind() == "Namespace") - boolInt(a.obj.GetKind() == "Namespace")
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t testing.TB, rc *rest.Config) *applier {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(suite.admin.Discovery()))}
}

// apply server-side applies m; dryRun asks the API server to run every
// admission and validation step without persisting.
func (a *applier) apply(t testing.TB, m manifest, dryRun bool) error {
	gvk := m.obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		ri = a.dyn.Resource(mapping.Resource).Namespace(m.obj.GetNamespace())
	}
	data, err := m.obj.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "opsuite-manifest-test", Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Patch(t.Context(), m.obj.GetName(), types.ApplyPatchType, data, opts)
	return err
}

func (a *applier) remove(ctx context.Context, t testing.TB, m manifest) {
	gvk := m.obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		ri = a.dyn.Resource(mapping.Resource).Namespace(m.obj.GetNamespace())
	}
	if err := ri.Delete(ctx, m.obj.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("remove %s %s: %v", m.obj.GetKind(), m.obj.GetName(), err)
	}
}

// TestManifestsPassServerSideDryRun validates every manifest under
// deployments/kubernetes with a server-side dry run against the harness,
// then applies them and proves the RBAC is enough: the driver, running as
// the shipped ServiceAccount (impersonated), deploys, scales, reports and
// deletes an application, and is refused what it does not need.
func TestManifestsPassServerSideDryRun(t *testing.T) {
	needCluster(t)
	ms := readManifests(t)
	a := newApplier(t, suite.rc)
	for _, m := range ms {
		if m.obj.GetKind() == "Namespace" {
			// Dry-run first, then create it: dry runs of what lives in it need it.
			if err := a.apply(t, m, true); err != nil {
				t.Fatalf("%s: dry run of %s %s: %v", m.file, m.obj.GetKind(), m.obj.GetName(), err)
			}
			if err := a.apply(t, m, false); err != nil {
				t.Fatalf("%s: create %s: %v", m.file, m.obj.GetName(), err)
			}
			continue
		}
		if err := a.apply(t, m, true); err != nil {
			t.Errorf("%s: dry run of %s %s: %v", m.file, m.obj.GetKind(), m.obj.GetName(), err)
		}
	}
	if t.Failed() {
		return
	}
	for _, m := range ms {
		if err := a.apply(t, m, false); err != nil {
			t.Fatalf("%s: apply %s %s: %v", m.file, m.obj.GetKind(), m.obj.GetName(), err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, m := range slices.Backward(ms) {
			a.remove(ctx, t, m)
		}
	})

	// The driver as the ServiceAccount.
	sa := rest.CopyConfig(suite.rc)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:opsuite-system:opsuite-deployer"}
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
	saClient, err := dynamic.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range []string{"secrets", "configmaps"} {
		_, err := saClient.Resource(schemaGVR("", "v1", res)).Namespace("default").List(t.Context(), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("service account listing %s: %v, want Forbidden", res, err)
		}
	}
}

func schemaGVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}
