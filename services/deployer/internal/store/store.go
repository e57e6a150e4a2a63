// Package store keeps the deployer's durable state in JetStream KV buckets:
// applications, their revisions, and rollouts with their progress. Every
// write is revision-checked, so two deployers (or a deployer and itself after
// a restart) can never silently overwrite each other.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/kvproto"
	"google.golang.org/protobuf/proto"
)

// Bucket names.
const (
	ApplicationsBucket = "opsuite_deployer_applications"
	RevisionsBucket    = "opsuite_deployer_revisions"
	RolloutsBucket     = "opsuite_deployer_rollouts"
)

// Sentinel errors.
var (
	ErrNotFound = kvproto.ErrNotFound
	ErrExists   = kvproto.ErrExists
	// ErrConflict: the entry changed since it was read; read again and retry.
	ErrConflict = kvproto.ErrConflict
)

// Store is the deployer's state.
type Store struct {
	apps, revs, rollouts jetstream.KeyValue
}

// Open creates the buckets if needed.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	open := func(name, desc string) (jetstream.KeyValue, error) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: desc, History: 1,
			Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
		})
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
		return kv, nil
	}
	s := &Store{}
	var err error
	if s.apps, err = open(ApplicationsBucket, "deployer applications"); err != nil {
		return nil, err
	}
	if s.revs, err = open(RevisionsBucket, "deployer revisions, key <app>.<number>"); err != nil {
		return nil, err
	}
	if s.rollouts, err = open(RolloutsBucket, "deployer rollouts and their progress"); err != nil {
		return nil, err
	}
	return s, nil
}

// Versioned is a value with the KV revision it was read at; pass the
// revision back to update it.
type Versioned[T proto.Message] = kvproto.Versioned[T]

func get[T proto.Message](ctx context.Context, kv jetstream.KeyValue, key string, newT func() T) (Versioned[T], error) {
	return kvproto.Get(ctx, kv, key, newT())
}

var (
	create = kvproto.Create
	update = kvproto.Update
	keys   = kvproto.Keys
)

func newApp() *deployerv1.Application { return &deployerv1.Application{} }
func newRev() *deployerv1.Revision    { return &deployerv1.Revision{} }
func newRollout() *deployerv1.Rollout { return &deployerv1.Rollout{} }

// CreateApplication stores a new application; ErrExists when the name is taken.
func (s *Store) CreateApplication(ctx context.Context, app *deployerv1.Application) (uint64, error) {
	return create(ctx, s.apps, app.GetName(), app)
}

// Application reads one application.
func (s *Store) Application(ctx context.Context, name string) (Versioned[*deployerv1.Application], error) {
	return get(ctx, s.apps, name, newApp)
}

// UpdateApplication replaces an application read at rev.
func (s *Store) UpdateApplication(ctx context.Context, app *deployerv1.Application, rev uint64) (uint64, error) {
	return update(ctx, s.apps, app.GetName(), app, rev)
}

// Applications lists every application, ordered by name.
func (s *Store) Applications(ctx context.Context) ([]Versioned[*deployerv1.Application], error) {
	names, err := keys(ctx, s.apps, "")
	if err != nil {
		return nil, err
	}
	out := make([]Versioned[*deployerv1.Application], 0, len(names))
	for _, n := range names {
		v, err := s.Application(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// DeleteApplication removes an application and its revisions; its rollouts
// stay as history until pruned.
func (s *Store) DeleteApplication(ctx context.Context, name string) error {
	revs, err := keys(ctx, s.revs, name+".")
	if err != nil {
		return err
	}
	for _, k := range revs {
		if err := s.revs.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("delete revision %s: %w", k, err)
		}
	}
	if err := s.apps.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete application %s: %w", name, err)
	}
	return nil
}

func revisionKey(app string, n uint32) string {
	return app + "." + fmt.Sprintf("%010d", n)
}

// CreateRevision stores revision rev.Number of rev.Application; ErrExists
// when that number is taken (another writer got there first).
func (s *Store) CreateRevision(ctx context.Context, rev *deployerv1.Revision) error {
	_, err := create(ctx, s.revs, revisionKey(rev.GetApplication(), rev.GetNumber()), rev)
	return err
}

// Revision reads one revision.
func (s *Store) Revision(ctx context.Context, app string, n uint32) (Versioned[*deployerv1.Revision], error) {
	return get(ctx, s.revs, revisionKey(app, n), newRev)
}

// UpdateRevision replaces a revision read at rev (e.g. its environment record).
func (s *Store) UpdateRevision(ctx context.Context, r *deployerv1.Revision, rev uint64) (uint64, error) {
	return update(ctx, s.revs, revisionKey(r.GetApplication(), r.GetNumber()), r, rev)
}

// Revisions lists an application's revisions, newest first.
func (s *Store) Revisions(ctx context.Context, app string) ([]*deployerv1.Revision, error) {
	ks, err := keys(ctx, s.revs, app+".")
	if err != nil {
		return nil, err
	}
	out := make([]*deployerv1.Revision, 0, len(ks))
	for i := len(ks) - 1; i >= 0; i-- {
		n, err := strconv.ParseUint(strings.TrimPrefix(ks[i], app+"."), 10, 32)
		if err != nil {
			continue
		}
		v, err := s.Revision(ctx, app, uint32(n))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v.Value)
	}
	return out, nil
}

// PruneRevisions deletes all but the newest keep revisions of app, never
// deleting the numbers in protect (revisions serving or known good).
func (s *Store) PruneRevisions(ctx context.Context, app string, keep int, protect ...uint32) (int, error) {
	revs, err := s.Revisions(ctx, app)
	if err != nil {
		return 0, err
	}
	pruned := 0
	for i, r := range revs {
		if i < keep || slices.Contains(protect, r.GetNumber()) {
			continue
		}
		if err := s.revs.Delete(ctx, revisionKey(app, r.GetNumber())); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return pruned, fmt.Errorf("prune revision %s/%d: %w", app, r.GetNumber(), err)
		}
		pruned++
	}
	return pruned, nil
}

// CreateRollout stores a new rollout.
func (s *Store) CreateRollout(ctx context.Context, r *deployerv1.Rollout) (uint64, error) {
	return create(ctx, s.rollouts, r.GetId(), r)
}

// Rollout reads one rollout.
func (s *Store) Rollout(ctx context.Context, id string) (Versioned[*deployerv1.Rollout], error) {
	return get(ctx, s.rollouts, id, newRollout)
}

// UpdateRollout records a rollout's progress; it was read (or last written) at rev.
func (s *Store) UpdateRollout(ctx context.Context, r *deployerv1.Rollout, rev uint64) (uint64, error) {
	return update(ctx, s.rollouts, r.GetId(), r, rev)
}

// Rollouts lists rollouts, optionally of one application, in id order
// (ids sort by creation time).
func (s *Store) Rollouts(ctx context.Context, app string) ([]Versioned[*deployerv1.Rollout], error) {
	ks, err := keys(ctx, s.rollouts, "")
	if err != nil {
		return nil, err
	}
	var out []Versioned[*deployerv1.Rollout]
	for _, k := range ks {
		v, err := s.Rollout(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if app == "" || v.Value.GetApplication() == app {
			out = append(out, v)
		}
	}
	return out, nil
}

// WatchRollout sends the rollout's current value and every saved change
// until ctx ends or the rollout is deleted; the channel closes then.
func (s *Store) WatchRollout(ctx context.Context, id string) (<-chan *deployerv1.Rollout, error) {
	w, err := s.rollouts.Watch(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("watch rollout %q: %w", id, err)
	}
	out := make(chan *deployerv1.Rollout)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // the end of the initial values
				}
				if e.Operation() != jetstream.KeyValuePut {
					return
				}
				r := &deployerv1.Rollout{}
				if err := proto.Unmarshal(e.Value(), r); err != nil {
					return
				}
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
