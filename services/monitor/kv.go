package monitor

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
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
type kvTable[T proto.Message] struct {
	kv     jetstream.KeyValue
	newMsg func() T
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
	return &kvTable[T]{kv: kv, newMsg: newMsg}, nil
}

func kvKey(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func (t *kvTable[T]) put(ctx context.Context, name string, m T) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	if _, err := t.kv.Put(ctx, kvKey(name), data); err != nil {
		return fmt.Errorf("store %s in %s: %w", name, t.kv.Bucket(), err)
	}
	return nil
}

func (t *kvTable[T]) delete(ctx context.Context, name string) error {
	if err := t.kv.Delete(ctx, kvKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s from %s: %w", name, t.kv.Bucket(), err)
	}
	return nil
}

// all loads every entry.
func (t *kvTable[T]) all(ctx context.Context) ([]T, error) {
	lister, err := t.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", t.kv.Bucket(), err)
	}
	var out []T
	for key := range lister.Keys() {
		e, err := t.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load %s from %s: %w", key, t.kv.Bucket(), err)
		}
		m := t.newMsg()
		if err := proto.Unmarshal(e.Value(), m); err != nil {
			return nil, fmt.Errorf("decode %s from %s: %w", key, t.kv.Bucket(), err)
		}
		out = append(out, m)
	}
	return out, nil
}
