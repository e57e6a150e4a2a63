package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Name is the driver name the deployer's configuration uses.
const Name = "kubernetes"

// FieldManager is the server-side apply field manager of every object the
// platform writes.
const FieldManager = "opsuite-deployer"

// Config says how to reach the cluster.
type Config struct {
	// InCluster uses the pod's service account (rest.InClusterConfig);
	// Kubeconfig and Context are then ignored.
	InCluster bool
	// Kubeconfig is a kubeconfig file; empty means the client-go default
	// ($KUBECONFIG, else ~/.kube/config).
	Kubeconfig string
	// Context is a context of the kubeconfig; empty means its current one.
	Context string
	// QPS and Burst bound the client's request rate; defaults 50 and 100.
	QPS   float32
	Burst int
	// PingTimeout bounds New's check that the API server answers; default 5s.
	PingTimeout time.Duration
	// RevisionHistoryLimit is how many old ReplicaSets each Deployment keeps
	// for Rollback; default 10.
	RevisionHistoryLimit int32
}

// RESTConfig resolves cfg into a client configuration without contacting
// the cluster.
func RESTConfig(cfg Config) (*rest.Config, error) {
	if cfg.InCluster {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: in-cluster config: %w", err)
		}
		return rc, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules.ExplicitPath = cfg.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: load kubeconfig %q (context %q): %w", cfg.Kubeconfig, cfg.Context, err)
	}
	return rc, nil
}

// Platform deploys applications onto one Kubernetes cluster. See the
// package documentation for how strategies map onto Deployments and
// Services. It is safe for concurrent use; operations on one application
// environment must not run concurrently (the deployer runs one rollout per
// environment at a time).
type Platform struct {
	cs       kubernetes.Interface
	dyn      dynamic.Interface // HTTPRoutes (Gateway API), which have no typed client here
	log      *slog.Logger
	histKeep int32

	// disc remembers whether the cluster serves HTTPRoutes.
	disc struct {
		mu           sync.Mutex
		groupVersion string
		served       bool
		at           time.Time
	}

	mu        sync.Mutex
	informers map[string]*nsInformers // by namespace
	closed    bool
}

// New connects to the cluster described by cfg and checks that the API
// server answers; when it does not, the error wraps driver.ErrUnavailable.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Platform, error) {
	rc, err := RESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	return NewForConfig(ctx, rc, cfg, log)
}

// NewForConfig is New with an already resolved client configuration
// (e.g. one that impersonates a service account).
func NewForConfig(ctx context.Context, rc *rest.Config, cfg Config, log *slog.Logger) (*Platform, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = 50, 100
	if cfg.QPS > 0 {
		rc.QPS = cfg.QPS
	}
	if cfg.Burst > 0 {
		rc.Burst = cfg.Burst
	}
	if rc.UserAgent == "" {
		rc.UserAgent = FieldManager
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: new client for %s: %w", rc.Host, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: new dynamic client for %s: %w", rc.Host, err)
	}
	timeout := cfg.PingTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(pingCtx).Raw()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: API server %s does not answer: %w: %w", rc.Host, driver.ErrUnavailable, err)
	}
	log.Debug("kubernetes API server answers", "host", rc.Host, "version", string(v))
	keep := cfg.RevisionHistoryLimit
	if keep <= 0 {
		keep = 10
	}
	p := &Platform{cs: cs, dyn: dyn, log: log, histKeep: keep, informers: map[string]*nsInformers{}}
	p.disc.groupVersion = gatewayAPIVersion
	return p, nil
}

// Name reports "kubernetes".
func (p *Platform) Name() string { return Name }

// Close stops the platform's informers; what runs in the cluster keeps
// running.
func (p *Platform) Close() error {
	p.mu.Lock()
	infs := p.informers
	p.informers = map[string]*nsInformers{}
	p.closed = true
	p.mu.Unlock()
	for _, inf := range infs {
		inf.stop()
	}
	return nil
}
