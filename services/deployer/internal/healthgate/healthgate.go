// Package healthgate gates rollouts on the health-checker: each new replica
// becomes a health-checker target, and a step waits until its replicas pass
// (or one of them fails) before traffic moves to them.
package healthgate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ErrUnhealthy: a replica's health check failed.
var ErrUnhealthy = errors.New("replica unhealthy")

// Gate registers replicas with the health-checker and waits on them.
type Gate struct {
	client hcv1.HealthCheckerServiceClient
	// StartupGrace is how long a replica that has not answered yet (its
	// port refuses connections, or its checks time out) may stay critical
	// before it counts as failed: a slow start is not a broken release. An
	// answer that fails (a 503, a failing command) counts at once.
	StartupGrace time.Duration
}

// DefaultStartupGrace is a Gate's StartupGrace unless set.
const DefaultStartupGrace = 10 * time.Second

// New returns a gate using the health-checker behind client.
func New(client hcv1.HealthCheckerServiceClient) *Gate {
	return &Gate{client: client, StartupGrace: DefaultStartupGrace}
}

// notListening reports a check that failed because the replica does not
// answer yet: nothing listens, or it is too busy starting to answer in time.
func notListening(msg string) bool {
	for _, s := range []string{"connection refused", "connection reset", "timed out", "deadline exceeded", "i/o timeout"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Defaults for a replica's check when the spec leaves them out: quick, since
// a rollout waits on them.
const (
	defaultInterval = time.Second
	defaultTimeout  = 800 * time.Millisecond
)

// Target builds the health-checker target for a replica from the
// application's health check. Without a health check, a replica with ports
// is checked by TCP connect on its first port; with no port either, Target
// returns nil and the replica counts as ready once running.
func Target(r driver.Replica, group string, hc *deployerv1.HealthCheck) (*hcv1.Target, error) {
	t := &hcv1.Target{
		Name:             TargetName(r.ID),
		Group:            group,
		Labels:           map[string]string{"app": r.App, "environment": r.Environment, "revision": strconv.FormatInt(r.Revision, 10), "replica": r.ID},
		Interval:         durationOr(hc.GetInterval(), defaultInterval),
		Timeout:          durationOr(hc.GetTimeout(), defaultTimeout),
		InitialDelay:     hc.GetInitialDelay(),
		FailureThreshold: hc.GetFailureThreshold(),
		SuccessThreshold: hc.GetSuccessThreshold(),
	}
	if t.Timeout.AsDuration() > t.Interval.AsDuration() {
		t.Timeout = t.Interval
	}
	addr := func(port uint32) (string, error) {
		for _, b := range r.Bindings {
			if port == 0 || b.ContainerPort == int(port) {
				return net.JoinHostPort(hostOf(b), strconv.Itoa(b.HostPort)), nil
			}
		}
		return "", fmt.Errorf("replica %s publishes no port %d to check", r.ID, port)
	}
	switch p := hc.GetProbe().(type) {
	case *deployerv1.HealthCheck_Http:
		a, err := addr(p.Http.GetPort())
		if err != nil {
			return nil, err
		}
		scheme := "http"
		if p.Http.GetHttps() {
			scheme = "https"
		}
		path := p.Http.GetPath()
		if path == "" {
			path = "/"
		}
		t.Check = &hcv1.Target_Http{Http: &hcv1.HttpCheck{
			Url: scheme + "://" + a + path, Headers: p.Http.GetHeaders(),
			ExpectedStatuses: p.Http.GetExpectedStatuses(), TlsSkipVerify: p.Http.GetHttps(),
		}}
	case *deployerv1.HealthCheck_Tcp:
		a, err := addr(p.Tcp.GetPort())
		if err != nil {
			return nil, err
		}
		t.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: a}}
	case *deployerv1.HealthCheck_Grpc:
		a, err := addr(p.Grpc.GetPort())
		if err != nil {
			return nil, err
		}
		t.Check = &hcv1.Target_Grpc{Grpc: &hcv1.GrpcCheck{Address: a, Service: p.Grpc.GetService()}}
	case *deployerv1.HealthCheck_Exec:
		t.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: p.Exec.GetArgv()}}
	default:
		if len(r.Bindings) == 0 {
			return nil, nil
		}
		a, _ := addr(0)
		t.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: a}}
	}
	return t, nil
}

func hostOf(b driver.Binding) string {
	if b.HostIP == "" || b.HostIP == "0.0.0.0" || b.HostIP == "::" {
		return "127.0.0.1"
	}
	return b.HostIP
}

func durationOr(d *durationpb.Duration, def time.Duration) *durationpb.Duration {
	if d.AsDuration() > 0 {
		return d
	}
	return durationpb.New(def)
}

// TargetName is the health-checker target name of a replica: its id, which
// the drivers already keep within DNS-1123 label rules.
func TargetName(replicaID string) string { return replicaID }

// Register creates (or, after a deployer restart, finds) the target for a
// replica and returns its name, or "" when the replica has nothing to check.
func (g *Gate) Register(ctx context.Context, r driver.Replica, group string, hc *deployerv1.HealthCheck) (string, error) {
	t, err := Target(r, group, hc)
	if err != nil || t == nil {
		return "", err
	}
	_, err = g.client.CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: t})
	if status.Code(err) == codes.AlreadyExists {
		return t.GetName(), nil
	}
	if err != nil {
		return "", fmt.Errorf("register replica %s with the health-checker: %w", r.ID, err)
	}
	return t.GetName(), nil
}

// Unregister removes targets; missing ones are fine.
func (g *Gate) Unregister(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		if n == "" {
			continue
		}
		if _, err := g.client.DeleteTarget(ctx, &hcv1.DeleteTargetRequest{Name: n}); err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("unregister %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// WaitPassing returns nil once every named target passes (passing or
// warning), an error wrapping ErrUnhealthy as soon as one turns critical
// (naming it and why), or ctx's error.
func (g *Gate) WaitPassing(ctx context.Context, group string, names []string) error {
	names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" })
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.client.Watch(ctx, &hcv1.WatchRequest{Group: group, Names: names, InitialState: true})
	if err != nil {
		return fmt.Errorf("watch replica health: %w", err)
	}
	pending := map[string]bool{}
	for _, n := range names {
		pending[n] = true
	}
	// Replicas critical only because they do not listen yet, by name, with
	// their last message; they fail when the startup grace ends.
	starting := map[string]string{}
	var grace <-chan time.Time
	if g.StartupGrace > 0 {
		t := time.NewTimer(g.StartupGrace)
		defer t.Stop()
		grace = t.C
	}
	transitions := make(chan *hcv1.TargetTransition)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case transitions <- resp.GetTransition():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case err := <-recvErr:
			if ctx.Err() != nil {
				return fmt.Errorf("waiting for %s to pass: %w", strings.Join(keys(pending), ", "), context.Cause(ctx))
			}
			return fmt.Errorf("watch replica health: %w", err)
		case <-grace:
			grace = nil
			for _, n := range slices.Sorted(maps.Keys(starting)) {
				return fmt.Errorf("%w: %s: still not answering after %s: %s", ErrUnhealthy, n, g.StartupGrace, starting[n])
			}
		case tr := <-transitions:
			switch tr.GetState() {
			case hcv1.CheckState_CHECK_STATE_PASSING, hcv1.CheckState_CHECK_STATE_WARNING:
				delete(pending, tr.GetName())
				delete(starting, tr.GetName())
				if len(pending) == 0 {
					return nil
				}
			case hcv1.CheckState_CHECK_STATE_CRITICAL:
				msg := tr.GetResult().GetMessage()
				if grace != nil && pending[tr.GetName()] && notListening(msg) {
					starting[tr.GetName()] = msg
					continue
				}
				return fmt.Errorf("%w: %s: %s", ErrUnhealthy, tr.GetName(), msg)
			}
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
