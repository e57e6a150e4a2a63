package direct_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/opsuite/opsuite/services/monitor/internal/direct"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
)

var base = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func ms(d time.Duration) int64 { return base.Add(d).UnixMilli() }

// sample is one point of a fixture series: a float, or a histogram when h.
type sample struct {
	t time.Duration
	v float64
	h bool
}

type fixture struct {
	labels  labels.Labels
	samples []sample
}

// fixtures are series chosen for the edges of the engine's semantics, then
// pseudo-random ones (the same on every run).
func fixtures() []fixture {
	temp := func(kv ...string) labels.Labels {
		return labels.FromStrings(append([]string{"__name__", "temp"}, kv...)...)
	}
	every := func(from, to, step time.Duration, f func(i int) float64) []sample {
		var out []sample
		for i, t := 0, from; t <= to; i, t = i+1, t+step {
			out = append(out, sample{t: t, v: f(i)})
		}
		return out
	}
	many := []string{"host", "wide"}
	for i := range 40 {
		many = append(many, fmt.Sprintf("l%02d", i), fmt.Sprintf("value-%d", i*7))
	}
	fx := []fixture{
		// Steady, several chunks (a head chunk holds up to 120 samples).
		{temp("host", "steady", "app", "shop-eu"), every(0, 110*time.Minute, 10*time.Second, func(i int) float64 { return float64(i % 100) })},
		// Ends with a staleness marker at 60m: gone for a bare selector,
		// not for last_over_time of a window reaching before it.
		{temp("host", "stale", "app", "shop-us"), append(every(0, 59*time.Minute, 15*time.Second, func(int) float64 { return 95 }), sample{t: 60 * time.Minute, v: math.Float64frombits(value.StaleNaN)})},
		// Stale, then back.
		{temp("host", "back", "app", "shop-eu"), append(append(every(0, 20*time.Minute, 30*time.Second, func(int) float64 { return 92 }),
			sample{t: 20*time.Minute + 15*time.Second, v: math.Float64frombits(value.StaleNaN)}), every(40*time.Minute, 80*time.Minute, 30*time.Second, func(int) float64 { return 3 })...)},
		// NaN values (not markers).
		{temp("host", "nan", "app", "bank"), every(0, 90*time.Minute, 20*time.Second, func(i int) float64 {
			if i%3 == 0 {
				return 50
			}
			return math.NaN()
		})},
		{temp("host", "allnan", "app", "bank"), every(0, 90*time.Minute, 20*time.Second, func(int) float64 { return math.NaN() })},
		// Infinities and signed zeros.
		{temp("host", "inf"), every(0, 90*time.Minute, 25*time.Second, func(i int) float64 {
			return []float64{math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1), 91}[i%5]
		})},
		// Many labels.
		{labels.FromStrings(append([]string{"__name__", "temp"}, many...)...), every(0, 100*time.Minute, 10*time.Second, func(i int) float64 { return float64(80 + i%20) })},
		// Old samples only: out of every window after 35m.
		{temp("host", "old", "app", "shop-eu"), every(0, 30*time.Minute, 10*time.Second, func(int) float64 { return 99 })},
		// Samples on whole minutes, for windows that start or end on them.
		{temp("host", "edges", "app", "shop-us"), every(0, 110*time.Minute, time.Minute, func(i int) float64 { return float64(i%7) * 20 })},
		// Floats, then native histograms, then floats again.
		{temp("host", "hist", "app", "shop-eu"), slices.Concat(
			every(0, 30*time.Minute, 30*time.Second, func(int) float64 { return 97 }),
			[]sample{{t: 31 * time.Minute, h: true}, {t: 32 * time.Minute, h: true}, {t: 50 * time.Minute, h: true}},
			every(51*time.Minute, 70*time.Minute, 30*time.Second, func(int) float64 { return 1 }))},
		// The same labels under another metric name: never selected.
		{labels.FromStrings("__name__", "load", "host", "steady", "app", "shop-eu"), every(0, 110*time.Minute, 10*time.Second, func(int) float64 { return 100 })},
		// Part deleted (tombstones), see load.
		{temp("host", "deleted", "app", "shop-eu"), every(0, 110*time.Minute, 10*time.Second, func(i int) float64 { return float64(i % 100) })},
	}
	rng := rand.New(rand.NewPCG(7, 11))
	apps := []string{"shop-eu", "shop-us", "bank", ""}
	for i := range 60 {
		kv := []string{"host", "r" + strconv.Itoa(i)}
		if a := apps[i%len(apps)]; a != "" {
			kv = append(kv, "app", a)
		}
		if i%5 == 0 {
			kv = append(kv, "zone", "z"+strconv.Itoa(i%3))
		}
		var ss []sample
		t := time.Duration(rng.IntN(600)) * time.Second
		step := time.Duration(5+rng.IntN(55)) * time.Second
		for t < 110*time.Minute {
			var v float64
			switch x := rng.IntN(100); {
			case x < 4:
				v = math.NaN()
			case x < 9:
				v = math.Float64frombits(value.StaleNaN)
			case x < 11:
				v = math.Inf(1 - 2*rng.IntN(2))
			default:
				v = math.Round(rng.Float64()*1000) / 10
			}
			ss = append(ss, sample{t: t, v: v})
			t += step
			if rng.IntN(50) == 0 {
				t += time.Duration(rng.IntN(900)) * time.Second // a gap
			}
		}
		fx = append(fx, fixture{temp(kv...), ss})
	}
	return fx
}

// load stores the fixtures; with deletions, a prefix of one series is
// deleted (which turns the latest-sample cache off: see tsstore.Reader).
func load(t *testing.T, deletions bool) *tsstore.Store {
	t.Helper()
	db, err := tsstore.Open(tsstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	// In time order across series: the head refuses samples more than half
	// a block range older than its newest.
	type point struct {
		l labels.Labels
		s sample
	}
	var all []point
	for _, f := range fixtures() {
		for _, s := range f.samples {
			all = append(all, point{f.labels, s})
		}
	}
	slices.SortStableFunc(all, func(a, b point) int { return int(a.s.t - b.s.t) })
	app := db.Appender(context.Background())
	for _, p := range all {
		var err error
		if p.s.h {
			h := &histogram.Histogram{Count: 3, ZeroCount: 1, Sum: 12, Schema: 0, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 0}}
			_, err = app.AppendHistogram(0, p.l, ms(p.s.t), h, nil)
		} else {
			_, err = app.Append(0, p.l, ms(p.s.t), p.s.v)
		}
		if err != nil {
			t.Fatalf("append %s at %s: %v", p.l, p.s.t, err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if !deletions {
		return db
	}
	// A deleted prefix. (A deletion in the middle of a series makes the
	// engine's querier panic in tombstones.Intervals.Add when it trims a
	// chunk at both ends, so TestDeletedSamples checks that case alone.)
	if err := db.DB().Delete(context.Background(), ms(0), ms(12*time.Minute), labels.MustNewMatcher(labels.MatchEqual, "host", "deleted")); err != nil {
		t.Fatal(err)
	}
	return db
}

// exprs compile to plans; the engine and the plan must agree on each.
var exprs = []string{
	`temp > 90`,
	`temp{app="shop-eu"} < 10`,
	`temp{app=~"shop-.*"} >= 95`,
	`temp{app!~"shop-.*"} <= 50`,
	`temp{app!="bank",zone=""} != 3`,
	`temp{zone=~"z[01]"} == 0`,
	`90 < temp`,
	`(50) >= temp{app="bank"}`,
	`temp > -Inf`,
	`temp < +Inf`,
	`temp != NaN`,
	`temp == NaN`,
	`temp > -5`,
	`last_over_time(temp[1m]) > 90`,
	`last_over_time(temp{app=~"shop.+"}[15s]) > 90`,
	`last_over_time(temp[10m]) < 20`,
	`(last_over_time(temp{app=~"shop-eu|bank"}[2m]) > 90) or (last_over_time(temp{app=~"shop-eu|bank"}[2m]) < 10)`,
	`last_over_time(temp[5m]) > 95 or last_over_time(temp[5m]) < 5 or last_over_time(temp[5m]) == 50`,
	`min_over_time(temp[3m]) > 40`,
	`max_over_time(temp{app="shop-us"}[90s]) >= 80`,
	`(min_over_time(temp[30m]) < 1) or (min_over_time(temp[30m]) > 90)`,
	`max_over_time(temp[7m]) != 0`,
	`temp{host=~"r1.*|steady|stale|back"} > 5`,
	`{__name__="temp"} > 50`,
	`temp > 90 or temp < 10`,
}

// evalTimes are the evaluation times: a sweep, and instants on samples and
// one millisecond either side.
func evalTimes() []time.Time {
	var out []time.Time
	for d := time.Duration(0); d <= 125*time.Minute; d += 97 * time.Second {
		out = append(out, base.Add(d))
	}
	for _, d := range []time.Duration{15 * time.Minute, 60 * time.Minute, 60*time.Minute + 15*time.Second, 65 * time.Minute, 20*time.Minute + 15*time.Second, 32 * time.Minute, 50 * time.Minute, 51 * time.Minute} {
		out = append(out, base.Add(d-time.Millisecond), base.Add(d), base.Add(d+time.Millisecond))
	}
	return out
}

type point struct {
	f float64
	t int64
}

func asMap(t *testing.T, what string, v promql.Vector) map[string]point {
	t.Helper()
	out := make(map[string]point, len(v))
	for _, s := range v {
		if s.H != nil {
			continue // rules take floats only
		}
		k := s.Metric.String()
		if _, dup := out[k]; dup {
			t.Fatalf("%s: %s twice", what, k)
		}
		out[k] = point{s.F, s.T}
	}
	return out
}

func same(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

// compare evaluates every expression at every time both ways; it returns
// how many samples the engine gave in all.
func compare(t *testing.T, db *tsstore.Store, r *tsstore.Reader) int {
	t.Helper()
	ctx := context.Background()
	total := 0
	var vec promql.Vector
	for _, expr := range exprs {
		e, err := db.Parser().ParseExpr(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		p := direct.Compile(e, tsstore.LookbackDelta)
		if p == nil {
			t.Fatalf("%s: no plan", expr)
		}
		for _, ts := range evalTimes() {
			q, err := db.Engine().NewInstantQuery(ctx, db.Queryable(), nil, expr, ts)
			if err != nil {
				t.Fatal(err)
			}
			res := q.Exec(ctx)
			if res.Err != nil {
				t.Fatalf("%s at %s: %v", expr, ts.Sub(base), res.Err)
			}
			want := asMap(t, "engine", res.Value.(promql.Vector))
			q.Close()
			vec, err = p.Eval(ctx, r, ts, vec)
			if err != nil {
				t.Fatalf("%s at %s: direct: %v", expr, ts.Sub(base), err)
			}
			got := asMap(t, "direct", vec)
			total += len(want)
			for k, w := range want {
				g, ok := got[k]
				switch {
				case !ok:
					t.Errorf("%s at %s: engine has %s %v, direct has not", expr, ts.Sub(base), k, w.f)
				case !same(g.f, w.f) || g.t != w.t:
					t.Errorf("%s at %s: %s: engine %v@%d, direct %v@%d", expr, ts.Sub(base), k, w.f, w.t, g.f, g.t)
				}
			}
			for k, g := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s at %s: direct has %s %v, engine has not", expr, ts.Sub(base), k, g.f)
				}
			}
		}
	}
	return total
}

// TestPlanMatchesEngine compares the plan with the PromQL engine on the
// same store: first with every sample in the head, then with the first
// hour compacted into a block, so windows reaching into it are read
// through the querier.
// The newest samples come from the store's cache where it has them: the
// answers stay the engine's.
func TestPlanMatchesEngineFromTheCache(t *testing.T) {
	db := load(t, false)
	r := db.NewReader()
	if n := compare(t, db, r); n < 1000 {
		t.Fatalf("the engine gave %d samples in all: the fixtures test too little", n)
	}
	if r.CacheHits < 100 {
		t.Fatalf("%d series answered from the cache: the test does not exercise it", r.CacheHits)
	}
	t.Logf("%d series answered from the cache", r.CacheHits)
}

func TestPlanMatchesEngine(t *testing.T) {
	db := load(t, true)
	r := db.NewReader()
	if n := compare(t, db, r); n < 1000 {
		t.Fatalf("the engine gave %d samples in all: the fixtures test too little", n)
	}
	if r.HeadReads == 0 || r.QuerierReads != 0 {
		t.Fatalf("all in the head: %d head reads, %d querier reads; want head only", r.HeadReads, r.QuerierReads)
	}
	if t.Failed() {
		return
	}

	head := db.DB().Head()
	if err := db.DB().CompactHead(tsdb.NewRangeHead(head, head.MinTime(), ms(time.Hour)-1)); err != nil {
		t.Fatal(err)
	}
	if len(db.DB().Blocks()) != 1 || head.MinTime() < ms(time.Hour) {
		t.Fatalf("after compaction: %d blocks, head from %s", len(db.DB().Blocks()), time.UnixMilli(head.MinTime()).Sub(base))
	}
	r = db.NewReader()
	compare(t, db, r)
	if r.HeadReads == 0 || r.QuerierReads == 0 {
		t.Fatalf("with a block: %d head reads, %d querier reads; want both", r.HeadReads, r.QuerierReads)
	}
}

// TestCompileRejects leaves other shapes to the engine.
func TestCompileRejects(t *testing.T) {
	db, err := tsstore.Open(tsstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, expr := range []string{
		`temp`,
		`temp > bool 5`,
		`temp > temp`,
		`sum(temp) > 5`,
		`temp offset 1m > 5`,
		`temp @ 100 > 5`,
		`rate(temp[5m]) > 1`,
		`avg_over_time(temp[5m]) > 1`,
		`sum_over_time(temp[5m]) > 1`,
		`last_over_time(temp[5m] offset 1m) > 1`,
		`last_over_time(temp[5m:1m]) > 1`,
		`{app="shop"} > 5`,
		`{__name__=~"temp|load"} > 5`,
		`temp + 1 > 5`,
		`temp > 5 and temp < 9`,
		`temp > 5 or on(host) temp < 1`,
		`temp > 5 or load < 1`,
		`last_over_time(temp[5m]) > 5 or temp < 1`,
		`last_over_time(temp[5m]) > 5 or last_over_time(temp[1m]) < 1`,
		`temp > scalar(load)`,
		`5 > bool 3`,
	} {
		e, err := db.Parser().ParseExpr(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if p := direct.Compile(e, tsstore.LookbackDelta); p != nil {
			t.Errorf("%s: compiled to %s over %s; want the engine", expr, p.Reduction(), p.Window())
		}
	}
}

// TestEvalReusesBuffers: a steady evaluation allocates (nearly) nothing per
// series.
func TestEvalReusesBuffers(t *testing.T) {
	db, err := tsstore.Open(tsstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 2000
	app := db.Appender(context.Background())
	for i := range n {
		l := labels.FromStrings("__name__", "load", "host", "h"+strconv.Itoa(i), "app", "shop")
		for k := range 10 {
			if _, err := app.Append(0, l, ms(time.Duration(k)*time.Second), float64(i%100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	e, err := db.Parser().ParseExpr(`last_over_time(load{app="shop"}[15s]) > 90`)
	if err != nil {
		t.Fatal(err)
	}
	p := direct.Compile(e, tsstore.LookbackDelta)
	r := db.NewReader()
	var vec promql.Vector
	ts := base.Add(10 * time.Second)
	allocs := testing.AllocsPerRun(20, func() {
		if vec, err = p.Eval(context.Background(), r, ts, vec); err != nil {
			t.Fatal(err)
		}
	})
	if len(vec) != n*9/100 {
		t.Fatalf("%d series, want %d", len(vec), n*9/100)
	}
	// The newest samples come from the store's cache: what is left is a
	// copy of the labels of each series in the result (9%) and a few per
	// call.
	if perSeries := allocs / n; perSeries > 0.15 {
		t.Fatalf("%.0f allocations per evaluation of %d series (%.2f per series)", allocs, n, perSeries)
	}
	t.Logf("%.0f allocations per evaluation of %d series", allocs, n)
}

// TestDeletedSamples: samples under a tombstone in the middle of a series
// are not read. (The engine cannot be the reference here: see load.)
func TestDeletedSamples(t *testing.T) {
	db, err := tsstore.Open(tsstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := labels.FromStrings("__name__", "temp", "host", "a")
	app := db.Appender(context.Background())
	for i := range 120 { // one sample a minute, value = minute
		if _, err := app.Append(0, l, ms(time.Duration(i)*time.Minute), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.DB().Delete(context.Background(), ms(30*time.Minute), ms(45*time.Minute), labels.MustNewMatcher(labels.MatchEqual, "host", "a")); err != nil {
		t.Fatal(err)
	}
	check := func(r *tsstore.Reader) {
		for _, c := range []struct {
			expr string
			at   time.Duration
			want float64 // the value of the one series; -1 for none
		}{
			{`last_over_time(temp[20m]) >= 0`, 40 * time.Minute, 29},
			{`last_over_time(temp[10m]) >= 0`, 45 * time.Minute, -1},
			{`last_over_time(temp[10m]) >= 0`, 46 * time.Minute, 46},
			{`temp >= 0`, 33 * time.Minute, 29},
			{`temp >= 0`, 44 * time.Minute, -1},
			{`max_over_time(temp[30m]) >= 0`, 44 * time.Minute, 29},
			{`min_over_time(temp[30m]) >= 0`, 60 * time.Minute, 46},
		} {
			e, err := db.Parser().ParseExpr(c.expr)
			if err != nil {
				t.Fatal(err)
			}
			vec, err := direct.Compile(e, tsstore.LookbackDelta).Eval(context.Background(), r, base.Add(c.at), nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.want < 0 && len(vec) != 0:
				t.Errorf("%s at %s: %v, want nothing", c.expr, c.at, vec)
			case c.want >= 0 && (len(vec) != 1 || vec[0].F != c.want):
				t.Errorf("%s at %s: %v, want %v", c.expr, c.at, vec, c.want)
			}
		}
	}
	r := db.NewReader()
	check(r)
	if r.HeadReads == 0 {
		t.Fatal("the head was not read")
	}
}
