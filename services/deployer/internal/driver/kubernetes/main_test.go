package kubernetes_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	k8sdriver "github.com/opsuite/opsuite/services/deployer/internal/driver/kubernetes"
)

// EnvKubeconfig names the harness's kubeconfig (scripts/kube-harness/start.sh
// writes it to its env file); without it the cluster tests skip, unless
// EnvRequire is 1.
const (
	EnvKubeconfig = "OPSUITE_KUBECONFIG"
	EnvRequire    = "OPSUITE_REQUIRE_KUBE"
)

var suite struct {
	run    string
	rc     *rest.Config
	admin  kubernetes.Interface // checks behind the platform's back
	reason error                // why no cluster, when nil rc
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := runTests(m)
	// client-go keeps idle connections in its shared transport cache (it has
	// no Close); everything the platform starts itself must be gone.
	if err := goleak.Find(
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2clientConnReadLoop).run"),
	); err != nil {
		fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func runTests(m *testing.M) int {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	suite.run = hex.EncodeToString(b)
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		suite.reason = errors.New(EnvKubeconfig + " is not set: start the harness with scripts/kube-harness/start.sh (or run make test-kube)")
		return m.Run()
	}
	rc, err := k8sdriver.RESTConfig(k8sdriver.Config{Kubeconfig: path})
	if err == nil {
		var cs *kubernetes.Clientset
		cs, err = kubernetes.NewForConfig(rc)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
			cancel()
			suite.admin = cs
		}
	}
	if err != nil {
		suite.reason = fmt.Errorf("harness at %s does not answer: %w", path, err)
		return m.Run()
	}
	suite.rc = rc
	return m.Run()
}

// needCluster skips (or fails, when OPSUITE_REQUIRE_KUBE=1) a test that
// needs the harness.
func needCluster(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	if suite.rc != nil {
		return
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s=1 but no cluster: %v", EnvRequire, suite.reason)
	}
	t.Skipf("no Kubernetes harness: %v", suite.reason)
}
