// Package scrape fetches a Prometheus text-exposition or OpenMetrics
// endpoint and parses it with the Prometheus parsers into samples.
package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"
)

// Accept is the Accept header: OpenMetrics first, then the text format.
const Accept = "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// maxBody bounds what one scrape reads.
const maxBody = 64 << 20

// Sample is one scraped float sample.
type Sample struct {
	Labels labels.Labels
	T      int64
	V      float64
}

// Meta is metadata seen in the exposition.
type Meta struct {
	Type, Help, Unit string
}

// Result of one scrape.
type Result struct {
	Samples []Sample
	Meta    map[string]Meta
}

// Target is what to scrape and how.
type Target struct {
	URL         string
	BearerToken string
	// Labels are added to every series; clashing scraped labels are renamed
	// exported_<name> unless HonorLabels.
	Labels      map[string]string
	HonorLabels bool
	// SampleLimit fails a scrape with more samples; 0 means none.
	SampleLimit int
}

// ErrSampleLimit is returned when a scrape has more samples than allowed.
var ErrSampleLimit = errors.New("sample limit exceeded")

// Fetch scrapes t once; now (ms) is the time of samples without one.
func Fetch(ctx context.Context, c *http.Client, t Target, now int64) (*Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", Accept)
	req.Header.Set("User-Agent", "opsuite-monitor")
	if t.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+t.BearerToken)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", t.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %s", t.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.URL, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", t.URL, maxBody)
	}
	return Parse(body, resp.Header.Get("Content-Type"), t, now)
}

// Parse reads an exposition body of contentType.
func Parse(body []byte, contentType string, t Target, now int64) (*Result, error) {
	p, err := textparse.New(body, contentType, labels.NewSymbolTable(), textparse.ParserOptions{FallbackContentType: "text/plain", OpenMetricsSkipSTSeries: true})
	if p == nil {
		return nil, fmt.Errorf("unsupported content type %q: %w", contentType, err)
	}
	res := &Result{Meta: map[string]Meta{}}
	var lset labels.Labels
	b := labels.NewBuilder(labels.EmptyLabels())
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse exposition: %w", err)
		}
		switch e {
		case textparse.EntryType:
			name, typ := p.Type()
			m := res.Meta[string(name)]
			m.Type = metaType(typ)
			res.Meta[string(name)] = m
		case textparse.EntryHelp:
			name, help := p.Help()
			m := res.Meta[string(name)]
			m.Help = string(help)
			res.Meta[string(name)] = m
		case textparse.EntryUnit:
			name, unit := p.Unit()
			m := res.Meta[string(name)]
			m.Unit = string(unit)
			res.Meta[string(name)] = m
		case textparse.EntrySeries:
			_, ts, v := p.Series()
			p.Labels(&lset)
			b.Reset(lset)
			for k, val := range t.Labels {
				if existing := lset.Get(k); existing != "" {
					if t.HonorLabels {
						continue
					}
					b.Set("exported_"+k, existing)
				}
				b.Set(k, val)
			}
			tm := now
			if ts != nil {
				tm = *ts
			}
			if value.IsStaleNaN(v) {
				v = math.Float64frombits(value.NormalNaN)
			}
			res.Samples = append(res.Samples, Sample{Labels: b.Labels(), T: tm, V: v})
			if t.SampleLimit > 0 && len(res.Samples) > t.SampleLimit {
				return nil, fmt.Errorf("%w: more than %d samples", ErrSampleLimit, t.SampleLimit)
			}
		}
	}
	return res, nil
}

func metaType(t model.MetricType) string {
	switch t {
	case model.MetricTypeCounter:
		return "counter"
	case model.MetricTypeGauge:
		return "gauge"
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
		return "histogram"
	case model.MetricTypeSummary:
		return "summary"
	}
	return ""
}

// Timeout returns the effective timeout for an interval.
func Timeout(interval, timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return min(timeout, interval)
}
