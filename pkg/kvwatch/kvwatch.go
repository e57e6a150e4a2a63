// Package kvwatch mirrors a JetStream KV bucket into memory: a replica that
// keeps a copy of shared state reads the bucket's current values once,
// then follows its changes.
package kvwatch

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrEnded is returned when the watcher closes before its initial values
// are all delivered.
var ErrEnded = errors.New("kv watch ended")

// Initial hands every current value of w to apply, up to the watcher's
// end-of-initial-values marker (a nil entry).
func Initial(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return ErrEnded
			}
			if e == nil {
				return nil
			}
			apply(e)
		}
	}
}
