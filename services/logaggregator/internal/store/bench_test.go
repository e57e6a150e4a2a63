package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
)

// benchLines is the size of the query benchmark's data set:
// LOGAGGREGATOR_BENCH_LINES (default 1,000,000; the figure is
// 10,000,000).
func benchLines() int {
	if v, err := strconv.Atoi(os.Getenv("LOGAGGREGATOR_BENCH_LINES")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

var benchTemplates = []string{
	"GET /api/v1/items/%d 200 %d bytes in %dms user=%x",
	"POST /api/v1/cart/%d 201 created order %d for customer %x in %dms",
	"cache miss for key product:%d:%d, fetched from db in %dms (%x)",
	"dial tcp 10.0.%d.%d:5432: connection refused after %dms retry=%x",
	"worker %d processed job %d of queue emails in %dms id=%x",
}

// buildCorpus commits n ~150-byte lines from 20 sources as the indexer
// does (commits of 65536 records) and writes the raw lines to a file for
// the grep baseline. One line in 100,000 holds the rare phrase.
func buildCorpus(tb testing.TB, dir string, n int) (*Store, string, string) {
	tb.Helper()
	s, err := Open(filepath.Join(dir, "index.db"), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	rawPath := filepath.Join(dir, "raw.log")
	raw, err := os.Create(rawPath)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(raw, 1<<20)
	rng := rand.New(rand.NewPCG(7, 8))
	base := time.Now().Add(-30 * time.Minute).UnixNano()
	step := int64(30*time.Minute) / int64(n)
	const commit = 1 << 16
	recs := make([]record.Record, 0, commit)
	seq := uint64(0)
	for i := range n {
		src := fmt.Sprintf("app/svc%02d/replica-%d", i%20, i%3)
		lvl := lav1.LogLevel_LOG_LEVEL_INFO
		switch r := rng.IntN(100); {
		case r < 3:
			lvl = lav1.LogLevel_LOG_LEVEL_ERROR
		case r < 10:
			lvl = lav1.LogLevel_LOG_LEVEL_WARN
		case r < 30:
			lvl = lav1.LogLevel_LOG_LEVEL_DEBUG
		}
		msg := fmt.Sprintf(benchTemplates[rng.IntN(len(benchTemplates))], rng.IntN(100000), rng.IntN(100000), rng.IntN(1000), rng.Uint64())
		if i%100_000 == 77 {
			msg += " needle-xyzzy-phrase"
		}
		msg = fmt.Sprintf("%-150s", msg)
		recs = append(recs, record.Record{Seq: record.Seq(seq+1, len(recs)), Time: base + int64(i)*step, ReceiveTime: base + int64(i)*step,
			Level: lvl, Source: src, Labels: record.Labels{{Name: "app", Value: src[4:9]}}, Message: msg})
		_, _ = w.WriteString(msg)
		_ = w.WriteByte('\n')
		if len(recs) == commit {
			seq++
			if _, err := s.Commit(recs, seq); err != nil {
				tb.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if len(recs) > 0 {
		seq++
		if _, err := s.Commit(recs, seq); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	_ = raw.Close()
	return s, filepath.Join(dir, "index.db"), rawPath
}

// BenchmarkQuery measures query latency over benchLines() stored lines,
// beside `grep -F -c` over the same lines as raw text in the same run.
func BenchmarkQuery(b *testing.B) {
	n := benchLines()
	dir := b.TempDir()
	start := time.Now()
	s, path, rawPath := buildCorpus(b, dir, n)
	b.Logf("corpus: %d lines stored in %v", n, time.Since(start))
	defer func() { _ = s.Close() }()
	st, _ := os.Stat(path)
	rst, _ := os.Stat(rawPath)
	b.Logf("index file %d MB, raw lines %d MB", st.Size()>>20, rst.Size()>>20)

	sourceLevelPhrase := filter.Spec{Sources: []string{"app/svc07"}, MinLevel: lav1.LogLevel_LOG_LEVEL_ERROR, Contains: "connection refused"}
	substring := filter.Spec{Contains: "needle-xyzzy-phrase"}
	run := func(b *testing.B, s *Store, spec filter.Spec) {
		f, err := filter.Compile(spec)
		if err != nil {
			b.Fatal(err)
		}
		recs, _, stats, err := s.Query(b.Context(), Query{Filter: f, Limit: 100})
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			b.Fatalf("no match for %+v (scanned %d)", spec, stats.RecordsScanned)
		}
	}
	b.Run("source_level_phrase/warm", func(b *testing.B) {
		for b.Loop() {
			run(b, s, sourceLevelPhrase)
		}
	})
	b.Run("substring/warm", func(b *testing.B) {
		for b.Loop() {
			run(b, s, substring)
		}
	})
	b.Run("source_level_phrase/after_reopen", func(b *testing.B) {
		_ = s.Close()
		for b.Loop() {
			s2, err := Open(path, Options{})
			if err != nil {
				b.Fatal(err)
			}
			run(b, s2, sourceLevelPhrase)
			_ = s2.Close()
		}
		s, _ = Open(path, Options{})
	})
	b.Run("baseline_grep_F_c", func(b *testing.B) {
		grep, err := exec.LookPath("grep")
		if err != nil {
			b.Skip("no grep")
		}
		for b.Loop() {
			out, err := exec.Command(grep, "-F", "-c", "needle-xyzzy-phrase", rawPath).Output()
			if err != nil || strings.TrimSpace(string(out)) == "0" {
				b.Fatalf("grep: %q %v", out, err)
			}
		}
	})
}
