package scrape

import (
	"testing"
)

func TestParseLabels(t *testing.T) {
	body := []byte("# TYPE reqs counter\nreqs{job=\"inner\",code=\"200\"} 7 1700000000000\nreqs{code=\"500\"} 1\n")
	cases := []struct {
		name        string
		honor       bool
		wantJob     string
		wantExpJob  string
		wantSamples int
	}{
		{"target labels win, scraped one kept as exported_", false, "outer", "inner", 2},
		{"honor_labels keeps the scraped value", true, "inner", "", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Parse(body, "text/plain; version=0.0.4", Target{Labels: map[string]string{"job": "outer"}, HonorLabels: tc.honor}, 42)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Samples) != tc.wantSamples {
				t.Fatalf("%d samples", len(res.Samples))
			}
			s := res.Samples[0]
			if s.Labels.Get("job") != tc.wantJob || s.Labels.Get("exported_job") != tc.wantExpJob || s.T != 1700000000000 || s.V != 7 {
				t.Fatalf("sample %s %d %g", s.Labels, s.T, s.V)
			}
			if res.Samples[1].T != 42 || res.Samples[1].Labels.Get("job") != "outer" {
				t.Fatalf("second sample %s at %d", res.Samples[1].Labels, res.Samples[1].T)
			}
			if res.Meta["reqs"].Type != "counter" {
				t.Fatalf("meta %v", res.Meta)
			}
		})
	}
	if _, err := Parse(body, "text/plain", Target{SampleLimit: 1}, 0); err == nil {
		t.Fatal("sample limit not enforced")
	}
	if _, err := Parse([]byte("reqs{ 1\n"), "text/plain", Target{}, 0); err == nil {
		t.Fatal("malformed exposition accepted")
	}
}

// FuzzParse: any body either parses or fails with an error, never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte("# HELP a A.\n# TYPE a gauge\na{x=\"y\"} 1.5\n"), "text/plain; version=0.0.4")
	f.Add([]byte("# TYPE t gauge\n# UNIT t celsius\nt 21.5\n# EOF\n"), "application/openmetrics-text; version=1.0.0")
	f.Add([]byte("h_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n"), "")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		res, err := Parse(body, ct, Target{Labels: map[string]string{"job": "j"}}, 1)
		if err != nil {
			return
		}
		for _, s := range res.Samples {
			if s.Labels.Get("job") != "j" {
				t.Fatalf("target label missing on %s", s.Labels)
			}
		}
	})
}
