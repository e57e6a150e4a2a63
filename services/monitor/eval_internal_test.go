package monitor

import (
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestFingerprint: alert ids (which start with the fingerprint) stay what
// earlier versions stored.
func TestFingerprint(t *testing.T) {
	for _, h := range []uint64{0, 1, 0xf, 0xdeadbeef, 1 << 63, math.MaxUint64, labels.FromStrings("a", "b").Hash()} {
		if got, want := fingerprint(h), fmt.Sprintf("%016x", h); got != want {
			t.Errorf("fingerprint(%d) = %s, want %s", h, got, want)
		}
	}
}

func TestSameLabels(t *testing.T) {
	ls := labels.FromStrings("alertname", "hot", "host", "a")
	for _, c := range []struct {
		m    map[string]string
		want bool
	}{
		{map[string]string{"alertname": "hot", "host": "a"}, true},
		{map[string]string{"alertname": "hot", "host": "b"}, false},
		{map[string]string{"alertname": "hot"}, false},
		{map[string]string{"alertname": "hot", "host": "a", "x": "y"}, false},
		{map[string]string{"alertname": "hot", "hots": "a"}, false},
		{nil, false},
	} {
		if got := sameLabels(c.m, ls); got != c.want {
			t.Errorf("sameLabels(%v) = %v, want %v", c.m, got, c.want)
		}
	}
}
