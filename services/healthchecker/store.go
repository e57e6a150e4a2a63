package healthchecker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/proto"
)

// Bucket is the JetStream KV bucket holding targets with their last status.
const Bucket = "opsuite_healthchecker_targets"

// store persists targets, one KV entry each, keyed by name, with revision
// checks so concurrent writers cannot overwrite each other silently.
type store struct {
	kv jetstream.KeyValue
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int) (*store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "health-checker targets and their last status",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	return &store{kv: kv}, nil
}

type storedTarget struct {
	target   *hcv1.Target
	revision uint64
}

// loadAll reads every stored target.
func (s *store) loadAll(ctx context.Context) ([]storedTarget, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	var out []storedTarget
	for key := range lister.Keys() {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load target %s: %w", key, err)
		}
		t := &hcv1.Target{}
		if err := proto.Unmarshal(e.Value(), t); err != nil {
			return nil, fmt.Errorf("decode target %s: %w", key, err)
		}
		out = append(out, storedTarget{target: t, revision: e.Revision()})
	}
	return out, nil
}

// create stores a new target; ErrAlreadyExists when the name is taken.
func (s *store) create(ctx context.Context, t *hcv1.Target) (uint64, error) {
	data, err := proto.Marshal(t)
	if err != nil {
		return 0, fmt.Errorf("encode target %s: %w", t.GetName(), err)
	}
	rev, err := s.kv.Create(ctx, t.GetName(), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s", ErrAlreadyExists, t.GetName())
	}
	if err != nil {
		return 0, fmt.Errorf("store target %s: %w", t.GetName(), err)
	}
	return rev, nil
}

// update replaces a target if it is still at revision rev.
func (s *store) update(ctx context.Context, t *hcv1.Target, rev uint64) (uint64, error) {
	data, err := proto.Marshal(t)
	if err != nil {
		return 0, fmt.Errorf("encode target %s: %w", t.GetName(), err)
	}
	newRev, err := s.kv.Update(ctx, t.GetName(), data, rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, fmt.Errorf("%w: %s", ErrConflict, t.GetName())
		}
		return 0, fmt.Errorf("store target %s: %w", t.GetName(), err)
	}
	return newRev, nil
}

func (s *store) delete(ctx context.Context, name string) error {
	if err := s.kv.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete target %s: %w", name, err)
	}
	return nil
}
