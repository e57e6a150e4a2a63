package process

import "time"

// Config configures a process driver.
type Config struct {
	// StateDir holds one directory per replica with its record, its output
	// and its timestamped log. It is created when missing. Required. Only one
	// driver may use a StateDir at a time; a new driver on the same StateDir
	// adopts the replicas a previous one left running.
	StateDir string
	// PollInterval is how often each replica is checked for exit and its
	// output collected into the log; default 100ms.
	PollInterval time.Duration
	// MaxLogBytes bounds each replica's timestamped log, kept as two files
	// of half this size; default 10 MiB.
	MaxLogBytes int64
}
