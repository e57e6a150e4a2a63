package logaggregator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// controlSubject carries the changes of the index other than records,
// in the write-ahead stream so that every replica's indexer applies them
// at the same position among the records. It is outside opsuite.logs.>,
// which log shippers may publish to.
const controlSubject = "opsuite.logwal.control"

// controlOp is one control message; exactly one of its operations is set.
type controlOp struct {
	// ID names the operation: its Nats-Msg-Id, and how the replica that
	// wrote it finds its result.
	ID       string      `json:"id"`
	Revision *revisionOp `json:"revision,omitempty"`
	Delete   *deleteOp   `json:"delete,omitempty"`
	Policy   *policyOp   `json:"policy,omitempty"`
}

// revisionOp: a revision is live for an application in an environment.
type revisionOp struct {
	Application string `json:"application"`
	Environment string `json:"environment,omitempty"`
	Revision    string `json:"revision"`
	RolloutID   string `json:"rollout_id,omitempty"`
	Time        int64  `json:"time"`
}

// deleteOp deletes a source's records with Start <= time < End (0:
// unbounded).
type deleteOp struct {
	Source string `json:"source"`
	Start  int64  `json:"start,omitempty"`
	End    int64  `json:"end,omitempty"`
}

// policyOp updates the retention policy's fields named by Paths from
// Policy (a RetentionPolicy in protobuf).
type policyOp struct {
	Policy     []byte   `json:"policy"`
	Paths      []string `json:"paths"`
	UpdateTime int64    `json:"update_time"`
}

// controlResult is what applying an operation gave.
type controlResult struct {
	deleted uint64
	policy  *lav1.RetentionPolicy
}

func newOpID(kind string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return kind + "-" + hex.EncodeToString(b[:])
}

// writeControl stores op in the write-ahead stream.
func (s *Service) writeControl(ctx context.Context, op controlOp) error {
	data, err := json.Marshal(op)
	if err != nil {
		return err
	}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: controlSubject, Data: data}, jetstream.WithMsgID(op.ID)); err != nil {
		return fmt.Errorf("write %s to %s: %w", op.ID, StreamName, err)
	}
	return nil
}

// control stores op in the write-ahead stream and waits until this
// replica's indexer has applied it.
func (s *Service) control(ctx context.Context, op controlOp) (controlResult, error) {
	ch := make(chan controlResult, 1)
	s.ctlMu.Lock()
	s.ctlWaiters[op.ID] = ch
	s.ctlMu.Unlock()
	defer func() {
		s.ctlMu.Lock()
		delete(s.ctlWaiters, op.ID)
		s.ctlMu.Unlock()
	}()
	if err := s.writeControl(ctx, op); err != nil {
		return controlResult{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-s.draining:
		return controlResult{}, fmt.Errorf("%w: %s is in the stream and will be applied", ErrClosed, op.ID)
	case <-ctx.Done():
		return controlResult{}, ctx.Err()
	}
}

// applyControl applies one control message at position pos of the index.
// Applying one twice (a crash before its position was recorded) does what
// applying it once did.
func (s *Service) applyControl(st *store.Store, data []byte, pos uint64) error {
	var op controlOp
	if err := json.Unmarshal(data, &op); err != nil {
		s.log.Warn("undecodable control message skipped", "position", pos, "err", err)
		_, err := st.Commit(nil, pos)
		return err
	}
	var res controlResult
	switch {
	case op.Revision != nil:
		r := op.Revision
		if err := st.SetRevision(r.Application, r.Environment, store.Revision{Revision: r.Revision, RolloutID: r.RolloutID, Time: r.Time}); err != nil {
			return err
		}
	case op.Delete != nil:
		d := op.Delete
		n, err := st.Delete(d.Source, d.Start, d.End, false)
		if err != nil {
			return err
		}
		res.deleted = n
		s.log.Info("logs deleted", "source", d.Source, "records", n, "op", op.ID)
	case op.Policy != nil:
		in := &lav1.RetentionPolicy{}
		if err := proto.Unmarshal(op.Policy.Policy, in); err != nil {
			s.log.Warn("undecodable retention policy skipped", "op", op.ID, "err", err)
			break
		}
		p := mergePolicy(st.Policy(), in, op.Policy.Paths)
		p.UpdateTime = timestamppb.New(time.Unix(0, op.Policy.UpdateTime))
		if err := st.SetPolicy(p); err != nil {
			return err
		}
		res.policy = p
	default:
		s.log.Warn("unknown control message skipped", "op", op.ID, "position", pos)
	}
	if _, err := st.Commit(nil, pos); err != nil {
		return err
	}
	s.ctlMu.Lock()
	ch := s.ctlWaiters[op.ID]
	s.ctlMu.Unlock()
	if ch != nil {
		select {
		case ch <- res:
		default:
		}
	}
	return nil
}

// mergePolicy returns p with the fields named in paths taken from in.
func mergePolicy(p, in *lav1.RetentionPolicy, paths []string) *lav1.RetentionPolicy {
	if p == nil {
		p = &lav1.RetentionPolicy{}
	}
	if p.DefaultLimits == nil {
		p.DefaultLimits = &lav1.RetentionLimits{}
	}
	for _, path := range paths {
		switch path {
		case "default_limits":
			p.DefaultLimits = proto.CloneOf(in.GetDefaultLimits())
			if p.DefaultLimits == nil {
				p.DefaultLimits = &lav1.RetentionLimits{}
			}
		case "default_limits.max_age":
			p.DefaultLimits.MaxAge = in.GetDefaultLimits().GetMaxAge()
		case "default_limits.max_bytes":
			p.DefaultLimits.MaxBytes = in.GetDefaultLimits().GetMaxBytes()
		case "sources":
			p.Sources = in.GetSources()
		case "max_total_bytes":
			p.MaxTotalBytes = in.GetMaxTotalBytes()
		}
	}
	return p
}

// errIndexRetry ends an indexing pass that could not apply a control
// message (or commit the records before it): the pass is retried from the
// index, also on the first pass.
var errIndexRetry = errors.New("index pass retried")
