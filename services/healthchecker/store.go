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

// get reads one target with its revision.
func (s *store) get(ctx context.Context, name string) (*hcv1.Target, uint64, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load target %s: %w", name, err)
	}
	t := &hcv1.Target{}
	if err := proto.Unmarshal(e.Value(), t); err != nil {
		return nil, 0, fmt.Errorf("decode target %s: %w", name, err)
	}
	return t, e.Revision(), nil
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
