package tsstore

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// TestReopenKeepsSamples: samples committed before a close (or crash: the
// write-ahead log is replayed) are there after reopening.
func TestReopenKeepsSamples(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	app := s.Appender(context.Background())
	if _, err := app.Append(0, labels.FromStrings("__name__", "m", "a", "b"), now, 3); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	s.SetMetadata("m", Metadata{Type: "gauge"})
	s.SetMetadata("m", Metadata{Help: "H"})
	if md := s.Metadata("m"); md.Type != "gauge" || md.Help != "H" {
		t.Fatalf("metadata %v", md)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := s.Metrics(context.Background(), now-1000, now+1000)
	if err != nil || len(ms) != 1 || ms[0].Name != "m" || ms[0].Series != 1 {
		t.Fatalf("metrics after reopen %v %v", ms, err)
	}
	q, err := s.Engine().NewInstantQuery(context.Background(), s.Queryable(), nil, `m{a="b"}`, time.UnixMilli(now))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	v, err := q.Exec(context.Background()).Vector()
	if err != nil || len(v) != 1 || v[0].F != 3 {
		t.Fatalf("query after reopen %v %v", v, err)
	}
}
