package tsstore

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// BenchmarkAppend measures appends of 10k existing series through the
// Store's appender (which keeps the latest-sample cache) beside the TSDB's
// own appender, in the same run: the cache's cost at ingest.
func BenchmarkAppend(b *testing.B) {
	const n = 10_000
	for _, c := range []struct {
		name string
		app  func(s *Store) storage.Appender
	}{
		{"tsdb", func(s *Store) storage.Appender { return s.DB().Appender(context.Background()) }},
		{"store", func(s *Store) storage.Appender { return s.Appender(context.Background()) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ls := make([]labels.Labels, n)
			refs := make([]storage.SeriesRef, n)
			for i := range ls {
				ls[i] = labels.FromStrings("__name__", "m", "host", "h"+strconv.Itoa(i))
			}
			ts := time.Now().UnixMilli()
			for i := 1; b.Loop(); i++ {
				app := c.app(s)
				for j := range ls {
					r, err := app.Append(refs[j], ls[j], ts+int64(i), float64(j))
					if err != nil {
						b.Fatal(err)
					}
					refs[j] = r
				}
				if err := app.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
