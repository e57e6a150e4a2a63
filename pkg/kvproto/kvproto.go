// Package kvproto keeps protobuf records in JetStream KV buckets with
// revision-checked writes: a record is read with the revision it had, and
// written back only if nobody changed it since, so two writers (or one
// writer and itself after a restart) never silently overwrite each other.
package kvproto

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// Sentinel errors, wrapped with the bucket and key.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict: the record changed since it was read; read again and retry.
	ErrConflict = errors.New("changed concurrently")
)

// Versioned is a record with the KV revision it was read at; pass the
// revision back to Update it.
type Versioned[T proto.Message] struct {
	Value    T
	Revision uint64
}

// Get reads key into v (a new, empty message).
func Get[T proto.Message](ctx context.Context, kv jetstream.KeyValue, key string, v T) (Versioned[T], error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Versioned[T]{}, fmt.Errorf("%s %q: %w", kv.Bucket(), key, ErrNotFound)
	}
	if err != nil {
		return Versioned[T]{}, fmt.Errorf("read %s %q: %w", kv.Bucket(), key, err)
	}
	if err := proto.Unmarshal(e.Value(), v); err != nil {
		return Versioned[T]{}, fmt.Errorf("decode %s %q: %w", kv.Bucket(), key, err)
	}
	return Versioned[T]{Value: v, Revision: e.Revision()}, nil
}

// Create writes key only if it does not exist yet.
func Create(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message) (uint64, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encode %s %q: %w", kv.Bucket(), key, err)
	}
	rev, err := kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s %q: %w", kv.Bucket(), key, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("write %s %q: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// Update writes key only if it is still at revision rev.
func Update(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message, rev uint64) (uint64, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encode %s %q: %w", kv.Bucket(), key, err)
	}
	newRev, err := kv.Update(ctx, key, data, rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, fmt.Errorf("%s %q: %w", kv.Bucket(), key, ErrConflict)
		}
		return 0, fmt.Errorf("write %s %q: %w", kv.Bucket(), key, err)
	}
	return newRev, nil
}

// Keys lists the bucket's keys starting with prefix, sorted.
func Keys(ctx context.Context, kv jetstream.KeyValue, prefix string) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	var out []string
	for k := range lister.Keys() {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}
