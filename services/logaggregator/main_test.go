package logaggregator_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		err := runCrashChild(dir)
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}
