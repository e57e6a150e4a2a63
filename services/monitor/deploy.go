package monitor

import (
	"context"
	"fmt"
	"slices"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// rolloutsKept is how many rollouts per application are remembered.
const rolloutsKept = 20

// consumeRollouts follows the deployer's rollout-started events so alerts
// can name the rollout that preceded them.
func (s *Service) consumeRollouts(ctx context.Context) {
	err := s.consumer.Consume(ctx, eventbus.ConsumerConfig{
		Durable:        RolloutConsumer,
		FilterSubjects: []string{"opsuite.deploy.rollout.started"},
	}, func(ctx context.Context, d eventbus.Delivery) error {
		var ev eventsv1.RolloutStarted
		if err := d.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %v", eventbus.ErrPermanent, err)
		}
		return s.rememberRollout(ctx, ev.GetRollout())
	})
	if err != nil && ctx.Err() == nil {
		s.log.Error("rollout consumer stopped", "err", err)
	}
}

// rememberRollout keeps what deploy context needs of a rollout.
func (s *Service) rememberRollout(ctx context.Context, r *deployerv1.Rollout) error {
	if r.GetApplication() == "" || r.GetId() == "" {
		return nil
	}
	slim := &deployerv1.Rollout{
		Id: r.GetId(), Application: r.GetApplication(), Environment: r.GetEnvironment(),
		FromRevision: r.GetFromRevision(), ToRevision: r.GetToRevision(), Kind: r.GetKind(),
		StartTime: r.GetStartTime(), CreateTime: r.GetCreateTime(),
	}
	if slim.StartTime == nil {
		slim.StartTime = r.GetCreateTime()
	}
	if slim.StartTime == nil {
		return fmt.Errorf("%w: rollout %s has no start time", eventbus.ErrPermanent, r.GetId())
	}
	if err := s.rolloutsKV.put(ctx, r.GetApplication()+"/"+r.GetId(), slim); err != nil {
		return err
	}
	s.mu.Lock()
	dropped := s.addRolloutLocked(slim)
	s.mu.Unlock()
	for _, old := range dropped {
		if err := s.rolloutsKV.delete(ctx, old.GetApplication()+"/"+old.GetId()); err != nil {
			s.log.Warn("forget old rollout", "rollout", old.GetId(), "err", err)
		}
	}
	return nil
}

// addRolloutLocked remembers r and returns the rollouts it pushed out.
func (s *Service) addRolloutLocked(r *deployerv1.Rollout) []*deployerv1.Rollout {
	list := s.rollouts[r.GetApplication()]
	if slices.ContainsFunc(list, func(o *deployerv1.Rollout) bool { return o.GetId() == r.GetId() }) {
		return nil
	}
	list = append(list, r)
	slices.SortFunc(list, func(a, b *deployerv1.Rollout) int {
		return a.GetStartTime().AsTime().Compare(b.GetStartTime().AsTime())
	})
	var dropped []*deployerv1.Rollout
	if len(list) > rolloutsKept {
		dropped = slices.Clone(list[:len(list)-rolloutsKept])
		list = list[len(list)-rolloutsKept:]
	}
	s.rollouts[r.GetApplication()] = list
	return dropped
}

// latestRolloutLocked is the newest rollout of app (in env, when given)
// that started at or before t.
func (s *Service) latestRolloutLocked(app, env string, t time.Time) *deployerv1.Rollout {
	list := s.rollouts[app]
	for i := len(list) - 1; i >= 0; i-- {
		r := list[i]
		if env != "" && r.GetEnvironment() != env {
			continue
		}
		if r.GetStartTime().AsTime().After(t) {
			continue
		}
		return r
	}
	return nil
}

// deployContextLocked names the rollout that preceded a.
func (s *Service) deployContextLocked(a *monitorv1.Alert) *monitorv1.DeployContext {
	app := a.GetLabels()["app"]
	if app == "" {
		return nil
	}
	env := a.GetLabels()["environment"]
	r := s.latestRolloutLocked(app, env, a.GetActiveAt().AsTime())
	if r == nil {
		return nil
	}
	dc := &monitorv1.DeployContext{
		Application: app, Environment: env, RolloutId: r.GetId(),
		Revision: fmt.Sprint(r.GetToRevision()), RolloutStartTime: proto.CloneOf(r.GetStartTime()),
		TimeToFire: durationpb.New(a.GetActiveAt().AsTime().Sub(r.GetStartTime().AsTime())),
	}
	if r.GetFromRevision() != 0 {
		dc.PreviousRevision = fmt.Sprint(r.GetFromRevision())
	}
	return dc
}
