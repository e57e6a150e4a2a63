package healthload

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) == "1" {
		// Re-executed by startLoopbackServers: be the server process, not a test run.
		if err := serveLoopback(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "healthload server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
