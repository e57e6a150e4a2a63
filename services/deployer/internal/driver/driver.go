// Package driver defines how the deployer runs replicas: one small interface
// with an implementation per runtime (docker, process, later kubernetes).
// The rollout engine only ever talks to this interface.
package driver

import (
	"context"
	"errors"
	"io"
	"time"
)

// Labels every driver puts on what it creates, so replicas can be found
// again after a deployer restart (no orphans) and never confused with
// objects the deployer does not own.
const (
	LabelManagedBy   = "opsuite.managed-by" // always "opsuite-deployer"
	LabelApp         = "opsuite.app"
	LabelEnvironment = "opsuite.environment"
	LabelRevision    = "opsuite.revision"
	LabelReplica     = "opsuite.replica"
	ManagedByValue   = "opsuite-deployer"
)

// Sentinel errors; drivers wrap them with what failed.
var (
	// ErrNotFound: no replica with that id is managed by this driver.
	ErrNotFound = errors.New("replica not found")
	// ErrUnavailable: the runtime (daemon, API server) cannot be reached.
	ErrUnavailable = errors.New("runtime unavailable")
	// ErrInvalidSpec: the runtime rejected the spec (bad image name, port...).
	ErrInvalidSpec = errors.New("invalid replica spec")
)

// Port is a port the workload listens on.
type Port struct {
	// Name identifies the port ("http"); unique within a spec.
	Name string
	// ContainerPort is the port inside the container. The process driver
	// ignores it and assigns a free loopback port instead, passed to the
	// process in $PORT (first port) and $PORT_<NAME> (upper case).
	ContainerPort int
	// Protocol is "tcp" (default) or "udp".
	Protocol string
}

// Volume mounts host data into a replica.
type Volume struct {
	// Source is a host path or a named volume (docker).
	Source   string
	Target   string
	ReadOnly bool
}

// Spec is everything a driver needs to start one replica. Values are
// structured: no shell strings are ever built from them.
type Spec struct {
	// ID is unique across all replicas ever created, DNS-1123 label rules,
	// e.g. "shop-production-r3-7f2k9". Drivers name what they create after it.
	ID          string
	App         string
	Environment string
	Revision    int64
	// Image is the container image (docker, kubernetes).
	Image string
	// Command replaces the image's entrypoint (docker) or is the program and
	// its arguments (process: Command[0] is looked up in PATH).
	Command []string
	// Args are appended to Command (or to the image's entrypoint).
	Args       []string
	Env        map[string]string
	WorkingDir string
	Ports      []Port
	Volumes    []Volume
	// Labels are added to the driver's own labels.
	Labels map[string]string
	// RestartOnCrash restarts the workload when it exits on its own.
	RestartOnCrash bool
	// StopGracePeriod is the time between SIGTERM and SIGKILL on Stop;
	// default 10s.
	StopGracePeriod time.Duration
}

// State is a replica's lifecycle state as the runtime reports it.
type State string

const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateExited   State = "exited"  // stopped on its own; see ExitCode
	StateStopped  State = "stopped" // stopped by the driver
	StateUnknown  State = "unknown"
)

// Binding is where a port of a replica is reachable from the deployer's
// host: always on loopback for docker and process (127.0.0.1:random).
type Binding struct {
	Name          string
	ContainerPort int
	HostIP        string
	HostPort      int
}

// Replica is a replica as the runtime sees it.
type Replica struct {
	ID          string
	App         string
	Environment string
	Revision    int64
	State       State
	// Bindings may change when the runtime restarts the replica (docker
	// picks a new host port on each restart): re-read them when Restarts
	// changes.
	Bindings []Binding
	// Restarts counts restarts after crashes.
	Restarts int
	// ExitCode of the last exit, when State is exited or the replica
	// restarted (best effort after a restart: docker resets it).
	ExitCode int
	// Reason is a sentence on why the replica is not running, if it is not.
	Reason    string
	StartedAt time.Time
	// RuntimeID is the runtime's own id (container id, pid as text, pod name).
	RuntimeID string
	Labels    map[string]string
}

// LogOptions select log lines.
type LogOptions struct {
	// Tail is how many of the last lines to return; 0 means all.
	Tail int
	// Follow keeps streaming until ctx ends or the replica stops.
	Follow bool
	// Since drops lines older than this, when not zero.
	Since time.Time
}

// Driver runs replicas on one runtime. Implementations are safe for
// concurrent use.
type Driver interface {
	// Name is "docker", "process" or "kubernetes".
	Name() string
	// Start creates and starts a replica and returns once the runtime runs
	// it (not once it is healthy). On error nothing is left behind.
	Start(ctx context.Context, spec Spec) (Replica, error)
	// Stop stops a replica gracefully (SIGTERM, then SIGKILL after the
	// grace period) and removes it. grace <= 0 means the spec's
	// StopGracePeriod; runtimes may round it up (docker: whole seconds).
	// Stopping a missing replica is not an error.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Inspect reports one replica; ErrNotFound when it does not exist.
	Inspect(ctx context.Context, id string) (Replica, error)
	// List reports every replica this driver manages whose labels include
	// all of match (LabelApp, LabelEnvironment, ...); an empty match lists all.
	List(ctx context.Context, match map[string]string) ([]Replica, error)
	// Logs writes the replica's output (stdout and stderr) to w, each write
	// one line ending in \n. With Follow, ctx ending is a normal end (nil).
	Logs(ctx context.Context, id string, opts LogOptions, w io.Writer) error
	// Close releases the driver's resources; replicas keep running.
	Close() error
}
