package process

import (
	"fmt"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Sentinel errors of the process driver, beside the driver package's own.
var (
	// ErrClosed is returned by every method called after Close; it wraps
	// driver.ErrUnavailable.
	ErrClosed = fmt.Errorf("process driver closed: %w", driver.ErrUnavailable)
	// ErrStateDirInUse: another driver holds the state directory.
	ErrStateDirInUse = fmt.Errorf("state directory in use by another process driver: %w", driver.ErrUnavailable)
)
