package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/rollout"
)

// EventReplicaUnhealthy is published when a replica's check turns critical.
const EventReplicaUnhealthy = "opsuite.deploy.replica.unhealthy"

// recentOutputLines is how much of a replica's output an unhealthy event carries.
const recentOutputLines = 20

// watchReplicaHealth follows the health of an environment's replicas for as
// long as its router runs. A replica whose check turns critical leaves the
// router's rotation at once (requests in flight finish) and is announced
// with its last lines of output; it rejoins the rotation once it passes
// again. A rollout's own gate still decides whether new replicas may take
// traffic in the first place.
func (s *Service) watchReplicaHealth(ctx context.Context, app, env string, e *envRuntime) {
	group := rollout.Group(app, env)
	for ctx.Err() == nil {
		stream, err := s.hc.Watch(ctx, &hcv1.WatchRequest{Group: group})
		if err == nil {
			for {
				resp, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				s.replicaTransition(ctx, app, e, resp.GetTransition())
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("replica health watch ended; watching again", "app", app, "env", env, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) replicaTransition(ctx context.Context, app string, e *envRuntime, tr *hcv1.TargetTransition) {
	id := tr.GetLabels()["replica"]
	if id == "" {
		return
	}
	passing := tr.GetState() == hcv1.CheckState_CHECK_STATE_PASSING || tr.GetState() == hcv1.CheckState_CHECK_STATE_WARNING
	critical := tr.GetState() == hcv1.CheckState_CHECK_STATE_CRITICAL
	if !passing && !critical {
		return
	}
	rep, d, err := s.findReplica(ctx, id)
	if err != nil {
		return // gone already: stopped by a rollout
	}
	if addr := routeAddr(rep); addr != "" {
		// Unknown backends (not routed yet, or already removed) are no error here.
		_ = e.router.SetReady(addr, passing)
	}
	if !critical {
		return
	}
	wasServing := tr.GetPreviousState() == hcv1.CheckState_CHECK_STATE_PASSING || tr.GetPreviousState() == hcv1.CheckState_CHECK_STATE_WARNING
	msg := tr.GetResult().GetMessage()
	if !wasServing && (strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset")) {
		return // still starting; the rollout's gate reports it if it never answers
	}
	output := s.recentOutput(ctx, d, rep)
	p := replicaProto(d.Name(), rep)
	ev := eventbus.Event{
		Type: EventReplicaUnhealthy, Subject: app,
		ID:   fmt.Sprintf("%s-unhealthy-%d", id, tr.GetTime().AsTime().UnixNano()),
		Data: &eventsv1.ReplicaUnhealthy{Replica: p, CheckMessage: msg, RecentOutput: output},
	}
	if _, err := s.events.Publish(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Warn("publish replica unhealthy", "replica", id, "err", err)
	}
	s.log.Warn("replica unhealthy: out of rotation until it passes again", "replica", id, "check", msg)
}

// findReplica asks each driver for a replica.
func (s *Service) findReplica(ctx context.Context, id string) (driver.Replica, driver.Driver, error) {
	for _, d := range s.drivers {
		r, err := d.Inspect(ctx, id)
		if err == nil {
			return r, d, nil
		}
		if !errors.Is(err, driver.ErrNotFound) {
			return driver.Replica{}, nil, err
		}
	}
	return driver.Replica{}, nil, fmt.Errorf("replica %s: %w", id, driver.ErrNotFound)
}

// routeAddr is where the router forwards to a replica (its first port).
func routeAddr(r driver.Replica) string {
	if len(r.Bindings) == 0 {
		return ""
	}
	b := r.Bindings[0]
	host := b.HostIP
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(b.HostPort))
}

// recentOutput is a replica's last lines of output with the values of its
// revision's secret variables masked.
func (s *Service) recentOutput(ctx context.Context, d driver.Driver, r driver.Replica) []string {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if err := d.Logs(lctx, r.ID, driver.LogOptions{Tail: recentOutputLines}, &buf); err != nil {
		return []string{"(output unavailable: " + err.Error() + ")"}
	}
	var secrets []string
	if rev, err := s.store.Revision(ctx, r.App, uint32(r.Revision)); err == nil {
		for _, e := range rev.Value.GetSpec().GetEnv() {
			if e.GetSecret() && e.GetValue() != "" {
				secrets = append(secrets, e.GetValue())
			}
		}
	}
	var out []string
	for line := range strings.Lines(buf.String()) {
		line = strings.TrimRight(line, "\r\n")
		for _, sec := range secrets {
			line = strings.ReplaceAll(line, sec, "*****")
		}
		out = append(out, line)
	}
	return out
}
