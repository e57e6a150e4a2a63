package store_test

import (
	"errors"
	"testing"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/pkg/natsembed/natstest"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/store"
)

func TestRunRevisionsAndIDs(t *testing.T) {
	srv := natstest.Start(t, "")
	st, err := store.Open(t.Context(), srv.JetStream, 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p, n, ok := store.ParseRunID(store.RunID("my-app-2", 17)); !ok || p != "my-app-2" || n != 17 {
		t.Fatalf("ParseRunID: %s %d %v", p, n, ok)
	}
	for _, bad := range []string{"", "x", "app-", "app-0", "-3"} {
		if _, err := st.Run(t.Context(), bad); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Run(%q): %v", bad, err)
		}
	}
	run := &pb.Run{Id: store.RunID("app", 1), Pipeline: "app", Number: 1}
	rev, err := st.CreateRun(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRun(t.Context(), run); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	run.State = pb.RunState_RUN_STATE_RUNNING
	if _, err := st.UpdateRun(t.Context(), run, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateRun(t.Context(), run, rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale revision: %v", err)
	}
	// Runs of a pipeline list in number order, not lexical.
	for _, n := range []int64{10, 2} {
		if _, err := st.CreateRun(t.Context(), &pb.Run{Id: store.RunID("app", n), Pipeline: "app", Number: n}); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := st.Runs(t.Context(), "app")
	if err != nil || len(runs) != 3 || runs[0].Value.GetNumber() != 1 || runs[1].Value.GetNumber() != 2 || runs[2].Value.GetNumber() != 10 {
		t.Fatalf("runs %v %v", runs, err)
	}
	// Output: seq of the last line, counting, reading after a given line.
	for i := 1; i <= 3; i++ {
		if err := st.AppendLog(t.Context(), run.GetId(), &pb.LogLine{Seq: uint64(i), Text: "l"}, i == 3); err != nil {
			t.Fatal(err)
		}
	}
	if seq, err := st.LastLogSeq(t.Context(), run.GetId()); err != nil || seq != 3 {
		t.Fatalf("last seq %d %v", seq, err)
	}
	if n, err := st.CountLogs(t.Context(), run.GetId()); err != nil || n != 3 {
		t.Fatalf("count %d %v", n, err)
	}
	var got []uint64
	if err := st.ReadLogs(t.Context(), run.GetId(), true, 1, func(l *pb.LogLine) error { got = append(got, l.GetSeq()); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 2 {
		t.Fatalf("read %v", got)
	}
}
