package logaggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/lease"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
)

// SharedBucket is the KV bucket the replicas share: the position each one
// has indexed (replica.<id>) and the signatures announced
// (signature.<id>). Its entries expire StreamMaxAge plus an hour after
// their last write: a replica away longer than the stream keeps messages
// has lost them anyway.
const SharedBucket = "opsuite_logaggregator"

// Leases of the log-aggregator, in pkg/lease's bucket.
const (
	// purgeLease is held by the one replica that purges indexed messages
	// from the write-ahead stream.
	purgeLease    = "logaggregator.purge"
	purgeLeaseTTL = 10 * time.Second
)

// shared is the state the replicas coordinate through.
type shared struct {
	kv     jetstream.KeyValue
	leases *lease.Store
}

func (s *Service) openShared(ctx context.Context) (*shared, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SharedBucket,
		Description: "Opsuite log-aggregator replicas: indexed positions, announced signatures",
		History:     1,
		TTL:         s.cfg.StreamMaxAge + time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.cfg.StreamReplicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", SharedBucket, err)
	}
	leases, err := lease.Open(ctx, s.js, lease.Config{Holder: s.cfg.ReplicaID, Replicas: s.cfg.StreamReplicas, Logger: s.log})
	if err != nil {
		return nil, err
	}
	return &shared{kv: kv, leases: leases}, nil
}

// position is what a replica reports it has indexed: the stream (by
// streamID) up to its sequence Seq.
type position struct {
	Stream string    `json:"stream"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
}

func positionKey(replica string) string { return "replica." + replica }

// reportPosition records in the shared bucket how far this replica's index
// follows the stream; the purge never removes what a replica has not
// indexed.
func (s *Service) reportPosition(ctx context.Context, sh *shared, st *store.Store) {
	id, base := st.Stream()
	if id == "" {
		return
	}
	v, err := json.Marshal(position{Stream: id, Seq: st.LastStreamSeq() - base, Time: time.Now()})
	if err != nil {
		return
	}
	if _, err := sh.kv.Put(ctx, positionKey(s.cfg.ReplicaID), v); err != nil && ctx.Err() == nil {
		s.log.Warn("report indexed position", "err", err)
	}
}

// retain applies the retention policy to this replica's index and reports
// its position, every RetentionInterval until ctx ends.
func (s *Service) retain(ctx context.Context, sh *shared, st *store.Store) {
	tick := time.NewTicker(s.cfg.RetentionInterval)
	defer tick.Stop()
	for {
		s.reportPosition(ctx, sh, st)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.applyRetention(st)
	}
}

// floor returns the lowest sequence of the stream id every replica reported
// having indexed, and false when some replica has not indexed any of it
// (or none reported).
func (s *Service) floor(ctx context.Context, sh *shared, id string) (uint64, bool, error) {
	lister, err := sh.kv.ListKeysFiltered(ctx, positionKey("*"))
	if err != nil {
		return 0, false, fmt.Errorf("list positions: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var low uint64
	found := false
	for _, k := range keys {
		e, err := sh.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("read position %s: %w", k, err)
		}
		var p position
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			s.log.Warn("undecodable replica position ignored", "key", k, "err", err)
			continue
		}
		if p.Stream != id {
			return 0, false, nil // not yet on this stream: nothing of it is safe
		}
		if !found || p.Seq < low {
			low, found = p.Seq, true
		}
	}
	return low, found, nil
}

// purge removes from the write-ahead stream the messages every replica has
// indexed, once they are older than the duplicate window (so repeated batch
// ids are still recognised), every RetentionInterval while this replica
// holds the purge lease.
func (s *Service) purge(ctx context.Context, sh *shared) {
	type mark struct {
		at  time.Time
		seq uint64
	}
	var marks []mark
	var markedStream string
	tick := time.NewTicker(s.cfg.RetentionInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		stream, err := s.js.Stream(ctx, StreamName)
		if err != nil {
			continue // the indexer recreates it
		}
		info := stream.CachedInfo()
		id := streamID(info)
		if id != markedStream {
			marks, markedStream = nil, id
		}
		low, ok, err := s.floor(ctx, sh, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("purge: replica positions", "err", err)
			}
			continue
		}
		if !ok {
			continue
		}
		now := time.Now()
		marks = append(marks, mark{now, low})
		var purgeTo uint64
		for len(marks) > 0 && now.Sub(marks[0].at) > s.cfg.DuplicateWindow+s.cfg.RetentionInterval {
			purgeTo = marks[0].seq
			marks = marks[1:]
		}
		if purgeTo >= info.State.FirstSeq {
			if err := stream.Purge(ctx, jetstream.WithPurgeSequence(purgeTo+1)); err != nil && ctx.Err() == nil {
				s.log.Warn("purge indexed messages from the stream", "up_to", purgeTo, "err", err)
			}
		}
	}
}

func signatureKey(id string) string { return "signature." + id }

// Values of a signature's key in the shared bucket.
const (
	sigClaimed   = "claimed "   // + replica id: announcement in progress
	sigAnnounced = "announced " // + replica id
)

// claim is a signature another replica claimed; it is announced here if it
// is still unannounced at deadline.
type claim struct {
	ev       store.NewSignature
	deadline time.Time
}

// announce publishes a new signature once among the replicas: the replica
// that creates its key announces it; the others remember it and announce it
// themselves if the claim is not marked announced within ClaimTimeout (the
// claimer died in between). A takeover publishes with the same event id, so
// the events stream drops it if the claimer had published after all.
func (s *Service) announce(ctx context.Context, sh *shared, ev store.NewSignature, pending map[string]claim) {
	key := signatureKey(ev.Signature.ID)
	rev, err := sh.kv.Create(ctx, key, []byte(sigClaimed+s.cfg.ReplicaID))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		e, err := sh.kv.Get(ctx, key)
		if err == nil && strings.HasPrefix(string(e.Value()), sigAnnounced) {
			return
		}
		pending[ev.Signature.ID] = claim{ev: ev, deadline: time.Now().Add(s.cfg.ClaimTimeout)}
		return
	case err != nil:
		// The bucket is out of reach: announce anyway; the event id makes
		// a second announcement within the events stream's duplicate
		// window harmless.
		s.log.Warn("claim signature; announcing without claim", "signature", ev.Signature.ID, "err", err)
	}
	if err := s.publishSignature(ctx, ev); err != nil {
		s.log.Warn("publish new signature", "signature", ev.Signature.ID, "err", err)
		if rev != 0 {
			_ = sh.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		}
		return
	}
	if rev != 0 {
		if _, err := sh.kv.Update(ctx, key, []byte(sigAnnounced+s.cfg.ReplicaID), rev); err != nil {
			s.log.Warn("mark signature announced", "signature", ev.Signature.ID, "err", err)
		}
	}
}

// takeOver announces the claims of other replicas left unannounced past
// their deadline.
func (s *Service) takeOver(ctx context.Context, sh *shared, pending map[string]claim) {
	now := time.Now()
	for id, c := range pending {
		if now.Before(c.deadline) {
			continue
		}
		key := signatureKey(id)
		e, err := sh.kv.Get(ctx, key)
		switch {
		case err == nil && strings.HasPrefix(string(e.Value()), sigAnnounced):
			delete(pending, id)
			continue
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Released by a claimer that failed to publish: claim it anew.
			delete(pending, id)
			s.announce(ctx, sh, c.ev, pending)
			continue
		case err != nil:
			continue
		}
		rev, err := sh.kv.Update(ctx, key, []byte(sigClaimed+s.cfg.ReplicaID), e.Revision())
		if err != nil {
			continue // changed meanwhile: looked at again next time
		}
		delete(pending, id)
		s.log.Info("announcing a signature another replica claimed and did not announce", "signature", id, "claim", string(e.Value()))
		if err := s.publishSignature(ctx, c.ev); err != nil {
			s.log.Warn("publish new signature", "signature", id, "err", err)
			_ = sh.kv.Delete(ctx, key, jetstream.LastRevision(rev))
			continue
		}
		if _, err := sh.kv.Update(ctx, key, []byte(sigAnnounced+s.cfg.ReplicaID), rev); err != nil {
			s.log.Warn("mark signature announced", "signature", id, "err", err)
		}
	}
}
