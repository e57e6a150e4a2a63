// Package docker is the deployer's driver for the Docker Engine: each
// replica is one container named after its id, labelled with the driver
// labels, publishing its ports on 127.0.0.1 with host ports the daemon picks.
// Images are never pulled; they must already be on the daemon.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// Name is what [Driver.Name] reports.
const Name = "docker"

// callTimeout bounds the daemon calls Start finishes regardless of its
// context, and removing a half-created container after Start failed.
const callTimeout = 30 * time.Second

var _ driver.Driver = (*Driver)(nil)

// Config configures the driver.
type Config struct {
	// Host is the daemon address ("unix:///var/run/docker.sock",
	// "tcp://10.0.0.5:2375"); empty means $DOCKER_HOST, else the platform
	// default. TLS settings come from $DOCKER_CERT_PATH and $DOCKER_TLS_VERIFY.
	Host string
	// PingTimeout bounds New's check that the daemon answers; default 5s.
	PingTimeout time.Duration
}

// Driver runs replicas as Docker containers. It is safe for concurrent use
// and keeps no state of its own: everything it reports comes from the
// daemon, so a restarted deployer finds its replicas again by their labels.
type Driver struct {
	cli *client.Client
	log *slog.Logger
}

// New connects to the daemon and checks that it answers; when it does not,
// the error wraps [driver.ErrUnavailable] and says why.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The client negotiates the API version with the daemon by default.
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: new client: %w", err)
	}
	timeout := cfg.PingTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ping, err := cli.Ping(pingCtx, client.PingOptions{NegotiateAPIVersion: true})
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker: daemon at %s does not answer: %w: %w", cli.DaemonHost(), driver.ErrUnavailable, err)
	}
	log.Debug("docker daemon answers", "host", cli.DaemonHost(), "daemon_api", ping.APIVersion, "client_api", cli.ClientVersion())
	return &Driver{cli: cli, log: log}, nil
}

// Name reports "docker".
func (d *Driver) Name() string { return Name }

// Close releases the connection to the daemon; containers keep running.
func (d *Driver) Close() error { return d.cli.Close() }

// Start creates the container spec.ID from spec.Image, starts it and
// reports it with the host ports the daemon bound. Whatever fails after the
// container was created, the container is removed again.
//
// The create and start calls run to completion even when ctx ends while
// they are in flight (bounded by callTimeout): a daemon that was cut off
// mid-call may still create the container, and Start must know whether it
// did to leave nothing behind. It then removes the container and returns
// ctx's error.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) (driver.Replica, error) {
	opts, err := createOptions(spec)
	if err != nil {
		return driver.Replica{}, fmt.Errorf("docker: start %s: %w", spec.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return driver.Replica{}, fmt.Errorf("docker: start %s: %w", spec.ID, err)
	}
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()

	begin := time.Now()
	created, err := d.cli.ContainerCreate(callCtx, opts)
	if err != nil {
		if !cerrdefs.IsConflict(err) {
			// A connection that broke mid-call may still have created it.
			d.removeOrphan(ctx, spec.ID)
		}
		return driver.Replica{}, fmt.Errorf("docker: start %s: create container: %w", spec.ID, createError(err, spec.Image))
	}
	for _, w := range created.Warnings {
		d.log.Warn("docker create warning", "replica", spec.ID, "warning", w)
	}
	fail := func(step string, err error) (driver.Replica, error) {
		if rmErr := d.remove(ctx, spec.ID, created.ID); rmErr != nil {
			return driver.Replica{}, fmt.Errorf("docker: start %s: %s: %w (and container %s is left behind: %v)", spec.ID, step, err, created.ID, rmErr)
		}
		return driver.Replica{}, fmt.Errorf("docker: start %s: %s: %w", spec.ID, step, err)
	}
	if err := ctx.Err(); err != nil {
		return fail("after create", err)
	}
	if _, err := d.cli.ContainerStart(callCtx, created.ID, client.ContainerStartOptions{}); err != nil {
		return fail("start container", classify(err))
	}
	if err := ctx.Err(); err != nil {
		return fail("after start", err)
	}
	res, err := d.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		return fail("inspect container", classify(err))
	}
	r := replicaFrom(res.Container)
	d.log.Debug("replica started", "replica", spec.ID, "container", created.ID, "state", r.State, "took", time.Since(begin))
	return r, nil
}

// Stop stops the container with grace as the time between SIGTERM and
// SIGKILL (rounded up to whole seconds; zero or less means the spec's
// StopGracePeriod) and removes it with its anonymous volumes.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := d.lookup(ctx, id)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: stop %s: %w", id, err)
	}
	var opts client.ContainerStopOptions
	if grace > 0 {
		secs := int(math.Ceil(grace.Seconds()))
		opts.Timeout = &secs
	}
	begin := time.Now()
	if _, err := d.cli.ContainerStop(ctx, c.ID, opts); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: stop %s: stop container: %w", id, classify(err))
	}
	if err := d.removeContainer(ctx, c.ID); err != nil {
		return fmt.Errorf("docker: stop %s: remove container: %w", id, err)
	}
	d.log.Debug("replica stopped", "replica", id, "container", c.ID, "took", time.Since(begin))
	return nil
}

// Inspect reports the replica id; [driver.ErrNotFound] when no container of
// that name exists or it is not managed by the deployer.
func (d *Driver) Inspect(ctx context.Context, id string) (driver.Replica, error) {
	c, err := d.lookup(ctx, id)
	if err != nil {
		return driver.Replica{}, fmt.Errorf("docker: inspect %s: %w", id, err)
	}
	return d.report(ctx, c), nil
}

// List reports the managed containers carrying every label of match,
// sorted by id.
func (d *Driver) List(ctx context.Context, match map[string]string) ([]driver.Replica, error) {
	filters := make(client.Filters).Add("label", driver.LabelManagedBy+"="+driver.ManagedByValue)
	for k, v := range match {
		filters.Add("label", k+"="+v)
	}
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers: %w", classify(err))
	}
	replicas := make([]driver.Replica, 0, len(res.Items))
	for _, s := range res.Items {
		// The summary lacks restart count, exit code and start time.
		ins, err := d.cli.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			continue // removed since the list
		}
		if err != nil {
			return nil, fmt.Errorf("docker: list containers: inspect %s: %w", s.ID, classify(err))
		}
		replicas = append(replicas, d.report(ctx, ins.Container))
	}
	slices.SortFunc(replicas, func(a, b driver.Replica) int { return strings.Compare(a.ID, b.ID) })
	return replicas, nil
}

// Logs writes the replica's stdout and stderr to w, one line per write,
// each ending in "\n". With opts.Follow it returns when the container stops
// or ctx ends; ctx ending is then not an error.
func (d *Driver) Logs(ctx context.Context, id string, opts driver.LogOptions, w io.Writer) error {
	c, err := d.lookup(ctx, id)
	if err != nil {
		return fmt.Errorf("docker: logs %s: %w", id, err)
	}
	lo := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: opts.Follow}
	if opts.Tail > 0 {
		lo.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lo.Since = opts.Since.UTC().Format(time.RFC3339Nano)
	}
	rc, err := d.cli.ContainerLogs(ctx, c.ID, lo)
	if err != nil {
		return fmt.Errorf("docker: logs %s: %w", id, classify(err))
	}
	defer rc.Close()

	stdout, stderr := &lineWriter{w: w}, &lineWriter{w: w}
	if c.Config != nil && c.Config.Tty {
		_, err = io.Copy(stdout, rc) // a TTY stream is not multiplexed
	} else {
		_, err = stdcopy.StdCopy(stdout, stderr, rc)
	}
	err = errors.Join(err, stdout.Flush(), stderr.Flush())
	if err != nil {
		if opts.Follow && ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("docker: logs %s: read stream: %w", id, err)
	}
	return nil
}

// report is replicaFrom plus the exit code of the last crash of a replica
// that runs again: Docker resets State.ExitCode when it restarts a
// container, so it is read back from the daemon's event log, best effort
// (the daemon keeps only its latest events: 256 in Engine 20.10).
func (d *Driver) report(ctx context.Context, c container.InspectResponse) driver.Replica {
	r := replicaFrom(c)
	if r.Restarts == 0 || r.ExitCode != 0 {
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	events := d.cli.Events(ctx, client.EventsListOptions{
		Since:   c.Created,
		Until:   time.Now().UTC().Format(time.RFC3339Nano),
		Filters: make(client.Filters).Add("type", "container").Add("container", c.ID).Add("event", "die"),
	})
	// The stream ends with an error (io.EOF once Until is reached) after
	// its last message.
	for {
		select {
		case m := <-events.Messages:
			if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil {
				r.ExitCode = code
			}
		case err := <-events.Err:
			if err != nil && !errors.Is(err, io.EOF) {
				d.log.Debug("cannot read the last exit code from the event log", "replica", r.ID, "err", err)
			}
			return r
		}
	}
}

// lookup inspects the container named id and checks the deployer manages
// it: a container of that name without the label is not ours to report or
// stop.
func (d *Driver) lookup(ctx context.Context, id string) (container.InspectResponse, error) {
	if id == "" {
		return container.InspectResponse{}, fmt.Errorf("%w: empty id", driver.ErrNotFound)
	}
	res, err := d.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return container.InspectResponse{}, classify(err)
	}
	c := res.Container
	// The daemon also resolves ids and id prefixes; only the name counts.
	if c.Name != "/"+id {
		return container.InspectResponse{}, fmt.Errorf("%w: no container named %s", driver.ErrNotFound, id)
	}
	if c.Config == nil || c.Config.Labels[driver.LabelManagedBy] != driver.ManagedByValue {
		return container.InspectResponse{}, fmt.Errorf("%w: container %s is not managed by %s", driver.ErrNotFound, id, driver.ManagedByValue)
	}
	return c, nil
}

// remove force-removes a container Start created, with a context of its
// own so a cancelled Start still cleans up.
func (d *Driver) remove(ctx context.Context, replicaID, containerID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	err := d.removeContainer(ctx, containerID)
	if err != nil {
		d.log.Warn("cannot remove half-created container", "replica", replicaID, "container", containerID, "err", err)
	}
	return err
}

// removeContainer force-removes a container with its anonymous volumes and
// returns once it is gone. While another caller removes it, the daemon
// answers 409 "removal already in progress": it then tries again until the
// container is gone (or that removal failed and its own succeeds), for at
// most callTimeout.
func (d *Driver) removeContainer(ctx context.Context, containerID string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rm := client.ContainerRemoveOptions{RemoveVolumes: true, Force: true}
	for {
		_, err := d.cli.ContainerRemove(ctx, containerID, rm)
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		if !cerrdefs.IsConflict(err) {
			return classify(err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removeOrphan removes the managed container named id, if a failed create
// left one behind.
func (d *Driver) removeOrphan(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	c, err := d.lookup(ctx, id)
	if err != nil {
		if !errors.Is(err, driver.ErrNotFound) {
			d.log.Warn("cannot check for a half-created container", "replica", id, "err", err)
		}
		return
	}
	_ = d.remove(ctx, id, c.ID) // logged; the caller reports the create error
}

// createError classifies a create failure; a missing image is the spec's
// fault, since the driver never pulls.
func createError(err error, image string) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: image %q is not on the daemon (the docker driver never pulls): %w", driver.ErrInvalidSpec, image, err)
	}
	if cerrdefs.IsConflict(err) {
		return fmt.Errorf("%w: a container with this name already exists: %w", driver.ErrInvalidSpec, err)
	}
	return classify(err)
}

// classify wraps a client error with the driver sentinel it means, if any.
// Context errors are returned as they are: they are the caller's.
func classify(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err):
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%w: %w", driver.ErrNotFound, err)
	case cerrdefs.IsInvalidArgument(err):
		return fmt.Errorf("%w: %w", driver.ErrInvalidSpec, err)
	}
	return err
}

// cloneLabels copies labels, never returning nil.
func cloneLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	maps.Copy(out, labels)
	return out
}
