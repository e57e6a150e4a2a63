#!/usr/bin/env bash
# Runs the suite's benchmarks and prints their results as one table.
#
# The health-checker load benchmark (internal/bench/healthload, see
# docs/benchmarks.md) measures one fixed window per case, so it runs with
# -benchtime 1x; any other Benchmark* in the product module runs with Go's
# normal benchtime. Raw `go test` output streams to stderr as it comes; the
# table goes to stdout. Exits non-zero when any benchmark fails.
#
# Environment: GO (default go); BENCH_RAW=FILE keeps the raw output there.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
load_pkg=internal/bench/healthload
raw=${BENCH_RAW:-}
if [[ -z $raw ]]; then
	raw=$(mktemp)
	trap 'rm -f "$raw"' EXIT
fi
: >"$raw"

status=0
echo "== $load_pkg: one measurement window per case (takes about two minutes)" >&2
# The opsuite binary runs with GOGC=400 unless GOGC is set (cmd/opsuite);
# the load benchmark runs the service in-process, so it gets the same.
GOGC=${GOGC:-400} "$GO" test -run '^$' -bench . -benchtime 1x -count 1 -timeout 15m "./$load_pkg" 2>&1 | tee -a "$raw" >&2 || status=1

# Other packages with benchmarks (gen/ and tools/ are separate modules).
mapfile -t others < <(find . -path ./gen -prune -o -path ./tools -prune -o -path ./.cache -prune -o \
	-name '*_test.go' -type f -print0 | xargs -0 -r grep -l '^func Benchmark' |
	xargs -r -n1 dirname | sed 's|^\./||' | sort -u | grep -vx "$load_pkg" || true)
if ((${#others[@]} > 0)); then
	echo "== ${others[*]}" >&2
	"$GO" test -run '^$' -bench . -benchmem -count 1 -timeout 15m "${others[@]/#/./}" 2>&1 | tee -a "$raw" >&2 || status=1
fi

# One row per benchmark, one column per unit; the load benchmark's units
# first in a fixed order, any other units after them as they appear.
awk '
BEGIN {
	n = split("checks/s sched-% cpu-cores p50-lag-ms p99-lag-ms max-lag-ms rss-MB heap-MB B/check allocs/check failed fds srv-cores other-cores", pref, " ")
	for (i = 1; i <= n; i++) { col[++ncol] = pref[i]; known[pref[i]] = 1 }
	w[0] = length("benchmark")
}
/^Benchmark[^ \t]*[ \t]+[0-9]+[ \t]/ {
	name = $1
	sub(/^Benchmark/, "", name)
	sub(/-[0-9]+$/, "", name)
	rows++
	val[rows, 0] = name
	if (length(name) > w[0]) w[0] = length(name)
	for (i = 3; i < NF; i += 2) {
		u = $(i + 1)
		if (u == "ns/op" && $i == 0) continue
		if (!(u in known)) { known[u] = 1; col[++ncol] = u }
		val[rows, u] = $i
		has[rows, u] = 1
		used[u] = 1
	}
	if (val[rows, "other-cores"] + 0 > 0.2) busy = 1
}
END {
	if (rows == 0) { print "no benchmark results"; exit }
	for (c = 1; c <= ncol; c++) {
		u = col[c]
		if (!(u in used)) continue
		w[u] = length(u)
		for (r = 1; r <= rows; r++) if (length(val[r, u]) > w[u]) w[u] = length(val[r, u])
	}
	line = sprintf("%-" w[0] "s", "benchmark")
	for (c = 1; c <= ncol; c++) if (col[c] in used) line = line sprintf("  %" w[col[c]] "s", col[c])
	print line
	for (r = 1; r <= rows; r++) {
		line = sprintf("%-" w[0] "s", val[r, 0])
		for (c = 1; c <= ncol; c++) if (col[c] in used) line = line sprintf("  %" w[col[c]] "s", has[r, col[c]] ? val[r, col[c]] : "-")
		print line
	}
	if (busy) print "\nnote: other-cores > 0.2 in some rows: other processes used the CPUs during those windows; rerun on a quiet machine."
}' "$raw"

exit "$status"
