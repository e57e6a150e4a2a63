package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"google.golang.org/protobuf/types/known/durationpb"
)

func openTemp(tb testing.TB, opts Options) (*Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "index.db")
	s, err := Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s, path
}

var sources = []string{"app/shop/a", "app/shop/b", "app/cart/a", "deployer", "monitor"}

// genRecords makes n records of stream message seq with times jittered
// around base, so time order differs from storage order.
func genRecords(rng *rand.Rand, seq uint64, n int, base int64) []record.Record {
	out := make([]record.Record, n)
	for i := range out {
		src := sources[rng.IntN(len(sources))]
		out[i] = record.Record{
			Seq: record.Seq(seq, i), Time: base + rng.Int64N(int64(time.Minute)), ReceiveTime: base,
			Level: lav1.LogLevel(rng.IntN(7)), Source: src, Message: fmt.Sprintf("msg %d from %s code=%d", i, src, rng.IntN(5)),
		}
		if rng.IntN(4) == 0 {
			out[i].Labels = record.Labels{{Name: "env", Value: "prod"}}
		}
		if rng.IntN(10) == 0 {
			out[i].Metadata = record.Labels{{Name: "user", Value: fmt.Sprint(rng.IntN(100))}}
		}
		if rng.IntN(10) == 0 {
			out[i].TraceID = "0123456789abcdef0123456789abcdef"
			out[i].SpanID = "0123456789abcdef"
		}
	}
	return out
}

func TestQueryMatchesBruteForce(t *testing.T) {
	s, path := openTemp(t, Options{BlockRecords: 64})
	rng := rand.New(rand.NewPCG(1, 2))
	var all []record.Record
	base := time.Now().Add(-time.Hour).UnixNano()
	for seq := uint64(1); seq <= 20; seq++ {
		recs := genRecords(rng, seq, 150, base+int64(seq)*int64(20*time.Second))
		if _, err := s.Commit(recs, seq); err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
	}
	if _, err := s.Commit(nil, 20); err == nil {
		t.Fatal("a commit at an indexed sequence was accepted")
	}
	specs := []filter.Spec{
		{},
		{Sources: []string{"app/shop"}, MinLevel: lav1.LogLevel_LOG_LEVEL_WARN},
		{Contains: "code=3"},
		{Regex: `msg 1\d from`, Matchers: []string{`env="prod"`}},
		{Contains: "user=4", Levels: []lav1.LogLevel{lav1.LogLevel_LOG_LEVEL_INFO, lav1.LogLevel_LOG_LEVEL_ERROR}},
		{TraceID: "0123456789abcdef0123456789abcdef"},
		{Start: base + int64(3*time.Minute), End: base + int64(5*time.Minute)},
	}
	check := func(t *testing.T, s *Store) {
		for si, spec := range specs {
			f, err := filter.Compile(spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, asc := range []bool{false, true} {
				var want []record.Record
				for i := range all {
					if f.Match(&all[i]) {
						want = append(want, all[i])
					}
				}
				q := Query{Filter: f, Ascending: asc}
				slices.SortFunc(want, func(a, b record.Record) int {
					if q.before(a.Time, a.Seq, b.Time, b.Seq) {
						return -1
					}
					return 1
				})
				var got []record.Record
				q.Limit = 37
				for {
					page, next, _, err := s.Query(t.Context(), q)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, page...)
					if next == nil {
						break
					}
					q.After = next
				}
				if len(got) != len(want) {
					t.Fatalf("spec %d asc=%v: %d records, want %d", si, asc, len(got), len(want))
				}
				for i := range got {
					g, w := got[i], want[i]
					if g.Seq != w.Seq || g.Message != w.Message || g.Time != w.Time || g.TraceID != w.TraceID || g.SpanID != w.SpanID ||
						g.Metadata.Key() != w.Metadata.Key() || g.Labels.Key() != w.Labels.Key() || g.Level != w.Level {
						t.Fatalf("spec %d asc=%v record %d: got %+v want %+v", si, asc, i, g, w)
					}
				}
			}
		}
	}
	check(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{BlockRecords: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.LastStreamSeq() != 20 {
		t.Fatalf("last seq after reopen %d", s2.LastStreamSeq())
	}
	check(t, s2)
}

func TestDeleteRewritesStraddlingBlocks(t *testing.T) {
	s, _ := openTemp(t, Options{})
	var recs []record.Record
	for i := range 10 {
		recs = append(recs, record.Record{Seq: record.Seq(1, i), Time: int64(1000 + i), Source: "app/shop/a", Message: fmt.Sprint(i)})
		recs = append(recs, record.Record{Seq: record.Seq(1, 10+i), Time: int64(1000 + i), Source: "app/cart", Message: fmt.Sprint(i)})
	}
	if _, err := s.Commit(recs, 1); err != nil {
		t.Fatal(err)
	}
	n, err := s.Delete("app/shop", 1003, 1007, true)
	if err != nil || n != 4 {
		t.Fatalf("validate: %d %v", n, err)
	}
	if n, err = s.Delete("app/shop", 1003, 1007, false); err != nil || n != 4 {
		t.Fatalf("delete: %d %v", n, err)
	}
	f, _ := filter.Compile(filter.Spec{})
	got, _, _, err := s.Query(t.Context(), Query{Filter: f, Limit: 100, Ascending: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16 {
		t.Fatalf("%d records left", len(got))
	}
	if n, _ = s.Delete("app", 0, 0, false); n != 16 {
		t.Fatalf("delete all: %d", n)
	}
	if len(s.Blocks()) != 0 {
		t.Fatalf("blocks left: %d", len(s.Blocks()))
	}
}

func TestRetentionByAgeAndSize(t *testing.T) {
	s, _ := openTemp(t, Options{})
	now := time.Now()
	seq := uint64(0)
	commit := func(src string, age time.Duration, n int) {
		seq++
		var recs []record.Record
		for i := range n {
			recs = append(recs, record.Record{Seq: record.Seq(seq, i), Time: now.Add(-age).UnixNano(), Source: src, Message: fmt.Sprintf("%s %d padding padding", src, i)})
		}
		if _, err := s.Commit(recs, seq); err != nil {
			t.Fatal(err)
		}
	}
	commit("a", 3*time.Hour, 10)
	commit("a", 30*time.Minute, 10)
	commit("b/x", 3*time.Hour, 10)
	commit("b/y", 2*time.Minute, 10)
	commit("b/y", time.Minute, 10)
	bytesOf := func(src string) uint64 {
		for _, st := range s.Sources(src) {
			if st.Source == src {
				return st.Bytes
			}
		}
		return 0
	}
	oneBlock := bytesOf("b/y") / 2
	p := &lav1.RetentionPolicy{
		DefaultLimits: &lav1.RetentionLimits{MaxAge: durationpb.New(time.Hour)},
		Sources:       []*lav1.SourceRetention{{Source: "b", Limits: &lav1.RetentionLimits{MaxBytes: oneBlock + 1}}},
	}
	res, err := s.ApplyRetention(p, now)
	if err != nil {
		t.Fatal(err)
	}
	// a: the 3h block goes by age; b has no age limit but a size limit of
	// one block over its subtree: the two oldest of b/x and b/y go.
	if res.Blocks != 3 || len(s.Blocks()) != 2 {
		t.Fatalf("removed %+v, %d blocks left", res, len(s.Blocks()))
	}
	for _, m := range s.Blocks() {
		if !(m.Source == "a" || m.Source == "b/y" && m.MaxTime == now.Add(-time.Minute).UnixNano()) {
			t.Fatalf("kept %s %d", m.Source, m.MaxTime)
		}
	}
}

func TestSignaturesTrackedExactlyOnce(t *testing.T) {
	s, path := openTemp(t, Options{})
	if err := s.SetRevision("shop", "prod", Revision{Revision: "7", RolloutID: "r7"}); err != nil {
		t.Fatal(err)
	}
	mk := func(seq uint64, msgs ...string) []record.Record {
		var out []record.Record
		for i, m := range msgs {
			out = append(out, record.Record{Seq: record.Seq(seq, i), Time: int64(seq*100 + uint64(i)), Level: lav1.LogLevel_LOG_LEVEL_ERROR,
				Source: "app/shop/1", Labels: record.Labels{{Name: "app", Value: "shop"}, {Name: "environment", Value: "prod"}}, Message: m})
		}
		return out
	}
	created, err := s.Commit(mk(1, "timeout after 5s", "timeout after 7s"), 1)
	if err != nil || len(created) != 1 || created[0].Signature.FirstRevision != "7" || created[0].Signature.Total != 2 || created[0].First.Message != "timeout after 5s" {
		t.Fatalf("created %+v %v", created, err)
	}
	created, err = s.Commit(mk(2, "timeout after 9s"), 2)
	if err != nil || len(created) != 0 {
		t.Fatalf("recurring signature reported new: %+v %v", created, err)
	}
	_ = s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	sigs := s2.Signatures()
	if len(sigs) != 1 || sigs[0].Total != 3 || sigs[0].Sample != "timeout after 9s" || sigs[0].FirstSeen != 100 {
		t.Fatalf("signatures after reopen: %+v", sigs)
	}
}

// FuzzBlockDecode: a corrupt block body is an error, never a panic.
func FuzzBlockDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	body, m, _ := encodeBlock(genRecords(rng, 1, 20, 0), nil)
	f.Add(body)
	f.Add([]byte{})
	f.Add([]byte{0x01, 0x00})
	f.Fuzz(func(t *testing.T, body []byte) {
		v, _, err := decodeBlock(&m, body, nil)
		if err != nil {
			return
		}
		for i := 0; i < v.n; i++ {
			_ = v.record(i)
		}
	})
}
