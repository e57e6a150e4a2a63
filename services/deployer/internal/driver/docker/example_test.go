package docker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"github.com/opsuite/opsuite/services/deployer/internal/driver/docker"
)

// The deployer picks the docker driver when a daemon answers and falls back
// to another driver when New reports it unavailable.
func Example() {
	ctx := context.Background()
	d, err := docker.New(ctx, docker.Config{}, slog.Default())
	if errors.Is(err, driver.ErrUnavailable) {
		fmt.Println("no docker here:", err)
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	r, err := d.Start(ctx, driver.Spec{
		ID:          "shop-production-r3-7f2k9",
		App:         "shop",
		Environment: "production",
		Revision:    3,
		Image:       "shop:3", // must already be on the daemon
		Env:         map[string]string{"LOG_LEVEL": "info"},
		Ports:       []driver.Port{{Name: "http", ContainerPort: 8080}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, b := range r.Bindings {
		fmt.Printf("%s: http://%s:%d\n", b.Name, b.HostIP, b.HostPort)
	}
	if err := d.Logs(ctx, r.ID, driver.LogOptions{Tail: 20}, os.Stdout); err != nil {
		fmt.Println(err)
	}
	if err := d.Stop(ctx, r.ID, 10*time.Second); err != nil {
		fmt.Println(err)
	}
}
