// Package healthload is the load benchmark of the health-checker: 10,000
// HTTP targets spread over 100 loopback ports, checked every second, with a
// bare net/http checker loop as the baseline measured in the same run, and a
// sweep of the target count upward to find where schedule lag stops being
// bounded.
//
// The loopback HTTP servers run in a separate process (this test binary
// re-executed with OPSUITE_HEALTHLOAD_SERVER=1) so that the CPU time measured
// with getrusage belongs to the checker alone. Each benchmark iteration is one
// fixed measurement window after a warm-up; run it with -benchtime 1x:
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/bench/healthload
//
// A plain go test runs only the harness's quick self-tests. Set
// OPSUITE_HEALTHLOAD_PROFILE to a directory to write there a CPU profile of
// each measurement window and a heap profile at its end, and
// OPSUITE_HEALTHLOAD_WARMUP to a duration to warm up longer (100s fills
// every target's result history). Results and how to read them are in
// docs/benchmarks.md.
package healthload
