package logaggregator

import (
	"context"
	"fmt"
	"strconv"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	"github.com/opsuite/opsuite/pkg/eventbus"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
)

// publishSignatures publishes signature.new events off the indexing path.
func (s *Service) publishSignatures(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-s.sigEvents:
			if s.events == nil {
				continue
			}
			sig := &ev.Signature
			sig.Sources = map[string]uint64{ev.First.Source: 1}
			if _, err := s.events.Publish(ctx, eventbus.Event{
				Type:    EventSignatureNew,
				Subject: sig.ID,
				ID:      "signature-" + sig.ID,
				Time:    time.Unix(0, sig.FirstSeen),
				Data:    &eventsv1.ErrorSignatureNew{Signature: signatureProto(sig, 0, 0), FirstRecord: ev.First.Proto()},
			}); err != nil {
				s.log.Warn("publish new signature", "signature", sig.ID, "err", err)
			}
		}
	}
}

// followDeploys consumes rollout events and records, per application and
// environment, the revision live now: the one being rolled out from the
// start of a rollout, the one serving after it ends.
func (s *Service) followDeploys(ctx context.Context, st *store.Store) {
	h := func(ctx context.Context, d eventbus.Delivery) error {
		var r *deployerv1.Rollout
		live := uint32(0)
		switch d.Type {
		case "opsuite.deploy.rollout.started":
			var ev eventsv1.RolloutStarted
			if err := d.Decode(&ev); err != nil {
				return fmt.Errorf("%w: %w", eventbus.ErrPermanent, err)
			}
			r = ev.GetRollout()
			live = r.GetToRevision()
		case "opsuite.deploy.rollout.rolled_back":
			var ev eventsv1.RolloutRolledBack
			if err := d.Decode(&ev); err != nil {
				return fmt.Errorf("%w: %w", eventbus.ErrPermanent, err)
			}
			r = ev.GetRollout()
			live = ev.GetRevision()
			if live == 0 {
				live = r.GetRollbackRevision()
			}
		case "opsuite.deploy.rollout.completed":
			var ev eventsv1.RolloutCompleted
			if err := d.Decode(&ev); err != nil {
				return fmt.Errorf("%w: %w", eventbus.ErrPermanent, err)
			}
			r = ev.GetRollout()
			switch r.GetPhase() {
			case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED:
				live = r.GetToRevision()
			default:
				live = r.GetRollbackRevision()
				if live == 0 {
					live = r.GetFromRevision()
				}
			}
		default:
			return nil
		}
		if r.GetApplication() == "" || live == 0 {
			return nil
		}
		return st.SetRevision(r.GetApplication(), r.GetEnvironment(), store.Revision{
			Revision: strconv.FormatUint(uint64(live), 10), RolloutID: r.GetId(), Time: d.Time.UnixNano(),
		})
	}
	for ctx.Err() == nil {
		err := s.deploys.Consume(ctx, eventbus.ConsumerConfig{
			Durable:        s.cfg.RevisionsConsumer,
			FilterSubjects: []string{"opsuite.deploy.rollout.>"},
		}, h)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Warn("deploy events consumer stopped; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}
