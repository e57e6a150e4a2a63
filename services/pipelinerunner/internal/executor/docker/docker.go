// Package docker runs command steps as containers from local images (never
// pulled), with the run's workspace mounted at /workspace, optional service
// containers on a network of the attempt, and everything removed when the
// attempt ends, is cancelled or times out.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/executor"
)

// Mount is where the workspace appears in step containers.
const Mount = "/workspace"

// cleanupTimeout bounds removing an attempt's containers after it ended.
const cleanupTimeout = 30 * time.Second

// Executor is the docker executor.
type Executor struct {
	cli *client.Client
}

// New connects to the daemon (host empty: $DOCKER_HOST or the default) and
// checks that it answers.
func New(ctx context.Context, host string) (*Executor, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker daemon at %s does not answer: %w", cli.DaemonHost(), err)
	}
	return &Executor{cli: cli}, nil
}

// Close releases the daemon connection.
func (e *Executor) Close() error { return e.cli.Close() }

// Remove force-removes a container left by an interrupted attempt.
func (e *Executor) Remove(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

func infra(format string, args ...any) error {
	return fmt.Errorf("%w: %s", executor.ErrInfra, fmt.Sprintf(format, args...))
}

// Run runs the step in a container and waits for it.
func (e *Executor) Run(ctx context.Context, spec executor.Spec) (executor.Result, error) {
	if spec.Image == "" {
		return executor.Result{}, infra("no image")
	}
	argv := spec.Command
	if spec.Script != "" {
		argv = []string{"/bin/sh", "-e", "-c", spec.Script}
	}
	if len(argv) == 0 {
		return executor.Result{}, infra("nothing to run")
	}
	for _, img := range append([]string{spec.Image}, serviceImages(spec.Services)...) {
		if _, err := e.cli.ImageInspect(ctx, img); err != nil {
			if cerrdefs.IsNotFound(err) {
				return executor.Result{}, infra("image %q not found locally", img)
			}
			return executor.Result{}, infra("inspect image %q: %v", img, err)
		}
	}
	cleanup := &cleaner{e: e}
	defer cleanup.run()
	suffix := randomSuffix()
	netName := ""
	if len(spec.Services) > 0 {
		netName = "opsuite-step-" + suffix
		if _, err := e.cli.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "bridge", Labels: spec.Labels}); err != nil {
			return executor.Result{}, infra("create network: %v", err)
		}
		cleanup.networks = append(cleanup.networks, netName)
		for _, svc := range spec.Services {
			id, err := e.create(ctx, client.ContainerCreateOptions{
				Config:           &container.Config{Image: svc.Image, Cmd: svc.Command, Env: svc.Env, Labels: spec.Labels},
				HostConfig:       &container.HostConfig{},
				NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {Aliases: []string{svc.Name}}}},
			})
			if err != nil {
				return executor.Result{}, infra("create service %s: %v", svc.Name, err)
			}
			cleanup.containers = append(cleanup.containers, id)
			if _, err := e.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
				return executor.Result{}, infra("start service %s: %v", svc.Name, err)
			}
		}
	}
	env := append([]string{"HOME=" + Mount, "CI=true", "OPSUITE_WORKSPACE=" + Mount}, spec.Env...)
	opts := client.ContainerCreateOptions{
		Config: &container.Config{
			Image: spec.Image, Cmd: argv, Env: env, Labels: spec.Labels,
			WorkingDir: path.Join(Mount, strings.TrimPrefix(path.Clean("/"+spec.Dir), "/")),
		},
		HostConfig: &container.HostConfig{Binds: []string{spec.Workspace + ":" + Mount}},
	}
	if netName != "" {
		opts.NetworkingConfig = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}}
	}
	if opts.Config.WorkingDir == Mount+"/" {
		opts.Config.WorkingDir = Mount
	}
	id, err := e.create(ctx, opts)
	if err != nil {
		return executor.Result{}, infra("create container from %q: %v", spec.Image, err)
	}
	cleanup.containers = append(cleanup.containers, id)
	wait := e.cli.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := e.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		if ctx.Err() != nil {
			return executor.Result{}, fmt.Errorf("start container: %w", ctx.Err())
		}
		return executor.Result{}, infra("start container from %q: %v", spec.Image, err)
	}
	if spec.Started != nil {
		spec.Started(id)
	}
	logsDone := make(chan error, 1)
	go func() {
		rc, err := e.cli.ContainerLogs(context.WithoutCancel(ctx), id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
		if err != nil {
			logsDone <- err
			return
		}
		defer rc.Close()
		_, err = stdcopy.StdCopy(orDiscard(spec.Stdout), orDiscard(spec.Stderr), rc)
		logsDone <- err
	}()
	select {
	case res := <-wait.Result:
		<-logsDone
		if res.Error != nil && res.Error.Message != "" {
			return executor.Result{ExitCode: int(res.StatusCode)}, infra("container: %s", res.Error.Message)
		}
		return executor.Result{ExitCode: int(res.StatusCode)}, nil
	case err := <-wait.Error:
		if ctx.Err() != nil {
			cleanup.run() // kills the container, which ends the log stream
			<-logsDone
			return executor.Result{}, fmt.Errorf("container %s: %w", id[:12], ctx.Err())
		}
		return executor.Result{}, infra("wait for container: %v", err)
	}
}

func (e *Executor) create(ctx context.Context, opts client.ContainerCreateOptions) (string, error) {
	res, err := e.cli.ContainerCreate(ctx, opts)
	if err != nil {
		return "", err
	}
	return res.ID, nil
}

// cleaner removes an attempt's containers and network, once.
type cleaner struct {
	e          *Executor
	containers []string
	networks   []string
	done       bool
}

func (c *cleaner) run() {
	if c.done {
		return
	}
	c.done = true
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	for _, id := range c.containers {
		if _, err := c.e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	for _, n := range c.networks {
		if _, err := c.e.cli.NetworkRemove(ctx, n, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	_ = errors.Join(errs...)
}

func serviceImages(svcs []executor.Service) []string {
	out := make([]string, 0, len(svcs))
	for _, s := range svcs {
		out = append(out, s.Image)
	}
	return out
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
