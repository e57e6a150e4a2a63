package monitor

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/opsuite/opsuite/pkg/kvwatch"
	"google.golang.org/protobuf/proto"
)

// JetStream KV buckets of the monitor.
const (
	BucketRules         = "opsuite_monitor_rules"
	BucketAlerts        = "opsuite_monitor_alerts"
	BucketSilences      = "opsuite_monitor_silences"
	BucketScrapeTargets = "opsuite_monitor_scrape_targets"
	BucketReceivers     = "opsuite_monitor_receivers"
	BucketRollouts      = "opsuite_monitor_rollouts"
)

// kvTable stores protobuf messages of one kind in one bucket, one entry per
// key. Keys are base64url of the name, since names (e.g. rule group names)
// may hold characters KV keys do not allow.
//
// Every replica mirrors the table (replicas.go); the table remembers the
// newest revision of each key this replica wrote or applied, so a change
// coming back through the watch is not applied over a newer one.
type kvTable[T proto.Message] struct {
	kv     jetstream.KeyValue
	newMsg func() T

	mu   sync.Mutex
	revs map[string]uint64 // by name

	// mirror keeps this replica's copy current (replicas.go); set before
	// the shards run.
	mirror *kvwatch.Mirror
}

func openTable[T proto.Message](ctx context.Context, js jetstream.JetStream, bucket, desc string, replicas int, newMsg func() T) (*kvTable[T], error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: desc,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	return &kvTable[T]{kv: kv, newMsg: newMsg, revs: map[string]uint64{}}, nil
}

func kvKey(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// kvName is the name a key stands for.
func kvName(key string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("key %q is not base64url: %w", key, err)
	}
	return string(b), nil
}

// advance records rev as name's newest known revision; false when a newer
// or equal one was known already.
func (t *kvTable[T]) advance(name string, rev uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rev <= t.revs[name] {
		return false
	}
	t.revs[name] = rev
	return true
}

// rev is name's newest known revision, 0 when none.
func (t *kvTable[T]) rev(name string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.revs[name]
}

func (t *kvTable[T]) put(ctx context.Context, name string, m T) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	rev, err := t.kv.Put(ctx, kvKey(name), data)
	if err != nil {
		return fmt.Errorf("store %s in %s: %w", name, t.kv.Bucket(), err)
	}
	t.advance(name, rev)
	return nil
}

// errStale: a revision-checked write found the entry changed (or created)
// by someone else since the revision it was based on.
var errStale = errors.New("changed by another writer")

// write stores m at name only if the entry is still at rev (0: absent), and
// returns the new revision; errStale when it is not.
func (t *kvTable[T]) write(ctx context.Context, name string, m T, rev uint64) (uint64, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", name, err)
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = t.kv.Create(ctx, kvKey(name), data)
	} else {
		newRev, err = t.kv.Update(ctx, kvKey(name), data, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("store %s in %s at revision %d: %w", name, t.kv.Bucket(), rev, errStale)
	case err != nil:
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, fmt.Errorf("store %s in %s at revision %d: %w", name, t.kv.Bucket(), rev, errStale)
		}
		return 0, fmt.Errorf("store %s in %s: %w", name, t.kv.Bucket(), err)
	}
	t.advance(name, newRev)
	return newRev, nil
}

func (t *kvTable[T]) delete(ctx context.Context, name string) error {
	if err := t.kv.Delete(ctx, kvKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s from %s: %w", name, t.kv.Bucket(), err)
	}
	return nil
}

// get loads name; ok is false when it is absent.
func (t *kvTable[T]) get(ctx context.Context, name string) (m T, rev uint64, ok bool, err error) {
	e, err := t.kv.Get(ctx, kvKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return m, 0, false, nil
	}
	if err != nil {
		return m, 0, false, fmt.Errorf("load %s from %s: %w", name, t.kv.Bucket(), err)
	}
	m, err = t.decode(e)
	if err != nil {
		return m, 0, false, err
	}
	return m, e.Revision(), true, nil
}

// decode reads a put entry's message.
func (t *kvTable[T]) decode(e jetstream.KeyValueEntry) (T, error) {
	m := t.newMsg()
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return m, fmt.Errorf("decode %s from %s: %w", e.Key(), t.kv.Bucket(), err)
	}
	return m, nil
}
