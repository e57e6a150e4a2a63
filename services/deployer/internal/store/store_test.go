package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/deployer/internal/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open starts a real embedded NATS in dir and opens the store on it.
func open(t *testing.T, dir string) (*store.Store, func()) {
	t.Helper()
	srv := natstest.Start(t, dir)
	s, err := store.Open(context.Background(), srv.JetStream, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s, srv.Stop
}

func TestApplicationsSurviveRestartAndConflictsAreCaught(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, stop := open(t, dir)
	app := &deployerv1.Application{Name: "shop", Spec: &deployerv1.ApplicationSpec{Workload: &deployerv1.ApplicationSpec_Image{Image: "shop:v1"}}}
	rev, err := s.CreateApplication(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateApplication(ctx, app); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	app.Description = "v2"
	if _, err := s.UpdateApplication(ctx, app, rev); err != nil {
		t.Fatal(err)
	}
	app.Description = "stale"
	if _, err := s.UpdateApplication(ctx, app, rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	stop()

	s, stop = open(t, dir)
	defer stop()
	got, err := s.Application(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.GetDescription() != "v2" || got.Value.GetSpec().GetImage() != "shop:v1" {
		t.Fatalf("after restart: %v", got.Value)
	}
	if _, err := s.Application(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

func TestRevisionsAreNumberedOnceAndPruned(t *testing.T) {
	s, stop := open(t, t.TempDir())
	defer stop()
	ctx := context.Background()
	// Two writers racing for the same number: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.CreateRevision(ctx, &deployerv1.Revision{Application: "shop", Number: 1}); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, store.ErrExists) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d writers created revision 1", wins.Load())
	}
	for n := uint32(2); n <= 12; n++ {
		if err := s.CreateRevision(ctx, &deployerv1.Revision{Application: "shop", Number: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateRevision(ctx, &deployerv1.Revision{Application: "shopfront", Number: 1}); err != nil {
		t.Fatal(err)
	}
	revs, err := s.Revisions(ctx, "shop")
	if err != nil || len(revs) != 12 || revs[0].GetNumber() != 12 || revs[11].GetNumber() != 1 {
		t.Fatalf("revisions newest first: %d %v", len(revs), err)
	}
	pruned, err := s.PruneRevisions(ctx, "shop", 5, 2)
	if err != nil || pruned != 6 {
		t.Fatalf("pruned %d (%v), want 6 (12 - 5 kept - revision 2 protected)", pruned, err)
	}
	revs, _ = s.Revisions(ctx, "shop")
	if len(revs) != 6 || revs[5].GetNumber() != 2 {
		t.Fatalf("after prune: %v", revs)
	}
	if err := s.DeleteApplication(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if revs, _ := s.Revisions(ctx, "shop"); len(revs) != 0 {
		t.Fatalf("revisions left after delete: %d", len(revs))
	}
	if revs, _ := s.Revisions(ctx, "shopfront"); len(revs) != 1 {
		t.Fatal("deleting shop touched shopfront")
	}
}

func TestRolloutProgressIsRevisionChecked(t *testing.T) {
	s, stop := open(t, t.TempDir())
	defer stop()
	ctx := context.Background()
	r := &deployerv1.Rollout{Id: "01a", Application: "shop", Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING}
	rev, err := s.CreateRollout(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.CurrentStepIndex = 1
	rev2, err := s.UpdateRollout(ctx, r, rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRollout(ctx, r, rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale progress write: %v, want ErrConflict", err)
	}
	if _, err := s.CreateRollout(ctx, &deployerv1.Rollout{Id: "01b", Application: "blog"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.Rollouts(ctx, "shop")
	if err != nil || len(list) != 1 || list[0].Revision != rev2 || list[0].Value.GetCurrentStepIndex() != 1 {
		t.Fatalf("rollouts of shop: %v %v", list, err)
	}
}
