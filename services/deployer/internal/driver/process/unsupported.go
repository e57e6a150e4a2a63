//go:build !linux

package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Driver is the process driver; it needs Linux (/proc) and fails elsewhere.
type Driver struct{}

var _ driver.Driver = (*Driver)(nil)

var errUnsupported = fmt.Errorf("process driver needs Linux: %w: %w", errors.ErrUnsupported, driver.ErrUnavailable)

// New fails: the process driver needs Linux.
func New(cfg Config, log *slog.Logger) (*Driver, error) { return nil, errUnsupported }

func (d *Driver) Name() string { return "process" }
func (d *Driver) Start(context.Context, driver.Spec) (driver.Replica, error) {
	return driver.Replica{}, errUnsupported
}
func (d *Driver) Stop(context.Context, string, time.Duration) error { return errUnsupported }
func (d *Driver) Inspect(context.Context, string) (driver.Replica, error) {
	return driver.Replica{}, errUnsupported
}
func (d *Driver) List(context.Context, map[string]string) ([]driver.Replica, error) {
	return nil, errUnsupported
}
func (d *Driver) Logs(context.Context, string, driver.LogOptions, io.Writer) error {
	return errUnsupported
}
func (d *Driver) Close() error { return nil }
