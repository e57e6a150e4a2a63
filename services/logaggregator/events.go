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

// publishSignatures announces new signatures off the indexing path, once
// among the replicas (see announce).
func (s *Service) publishSignatures(ctx context.Context, sh *shared) {
	pending := map[string]claim{}
	tick := time.NewTicker(max(s.cfg.ClaimTimeout/4, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if s.events != nil && len(pending) > 0 {
				s.takeOver(ctx, sh, pending)
			}
		case ev := <-s.sigEvents:
			if s.events == nil {
				continue
			}
			s.announce(ctx, sh, ev, pending)
		}
	}
}

// publishSignature publishes signature.new for ev with an event id of the
// signature alone, the same on every replica.
func (s *Service) publishSignature(ctx context.Context, ev store.NewSignature) error {
	sig := ev.Signature
	sig.Sources = map[string]uint64{ev.First.Source: 1}
	_, err := s.events.Publish(ctx, eventbus.Event{
		Type:    EventSignatureNew,
		Subject: sig.ID,
		ID:      "signature-" + sig.ID,
		Time:    time.Unix(0, sig.FirstSeen),
		Data:    &eventsv1.ErrorSignatureNew{Signature: signatureProto(&sig, 0, 0), FirstRecord: ev.First.Proto()},
	})
	return err
}

// followDeploys consumes rollout events and records, per application and
// environment, the revision live now: the one being rolled out from the
// start of a rollout, the one serving after it ends. The replicas share the
// durable consumer: the one an event reaches writes the revision to the
// write-ahead stream, and every indexer applies it at its position there,
// so all replicas tie the same records to the same revision.
func (s *Service) followDeploys(ctx context.Context) {
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
		op := controlOp{ID: "revision-" + d.ID, Revision: &revisionOp{
			Application: r.GetApplication(), Environment: r.GetEnvironment(),
			Revision: strconv.FormatUint(uint64(live), 10), RolloutID: r.GetId(), Time: d.Time.UnixNano(),
		}}
		if err := s.writeControl(ctx, op); err != nil {
			return fmt.Errorf("record revision of %s/%s: %w", r.GetApplication(), r.GetEnvironment(), err)
		}
		return nil
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
