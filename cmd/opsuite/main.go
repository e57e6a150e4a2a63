// Command opsuite runs the Opsuite deployment-and-operations suite: `up`
// runs every component with an embedded NATS server, `serve` runs chosen
// components against an external NATS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/opsuite/opsuite/internal/cli"
	"github.com/opsuite/opsuite/internal/suite"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	// Fewer, larger GC cycles keep the health-checker's check start lag low
	// with thousands of targets (docs/benchmarks.md). GOGC in the
	// environment still wins; GOMEMLIMIT can cap the memory this costs.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "opsuite:", err)
		stop()
		os.Exit(cli.ExitCode(err)) // 2 for usage errors, 1 for the rest
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "opsuite",
		Short:         "Deploy, run pipelines, monitor, aggregate logs and check health",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newUpCmd(stdout, stderr), newServeCmd(stdout, stderr), newProbeCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), buildVersion()) },
	})
	root.AddCommand(cli.Commands(stdout, stderr)...)
	return root
}

// serverFlags are the flags shared by up and serve.
type serverFlags struct {
	cfg          suite.Config
	logLevel     string
	logFormat    string
	shutdownWait time.Duration
}

func (f *serverFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.cfg.DataDir, "data-dir", "./.opsuite", "directory for durable state (embedded NATS JetStream)")
	fs.StringVar(&f.cfg.GRPCAddr, "grpc-addr", "127.0.0.1:7070", "host:port for the gRPC services")
	fs.StringVar(&f.cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "host:port for REST, OpenAPI, /metrics, /healthz and /readyz")
	fs.StringVar(&f.cfg.NATSListen, "nats-listen", "127.0.0.1:4222", "host:port where the embedded NATS accepts clients; empty for in-process only")
	fs.StringVar(&f.cfg.OTLPEndpoint, "otlp-endpoint", "", "host:port of an OTLP/gRPC trace collector")
	fs.DurationVar(&f.shutdownWait, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take")
	fs.StringVar(&f.cfg.Docker, "docker", "auto", "the deployer's Docker driver: auto (when a daemon answers), on (required) or off")
	fs.StringVar(&f.cfg.Kubeconfig, "kubeconfig", "", "turn the deployer's kubernetes driver on: a kubeconfig file, or in-cluster for the pod's service account")
	fs.StringVar(&f.cfg.KubeContext, "kube-context", "", "the kubeconfig context the kubernetes driver uses; default its current context")
	fs.StringVar(&f.cfg.TLSCert, "tls-cert", "", "PEM certificate (with its chain): serve gRPC and HTTP over TLS only")
	fs.StringVar(&f.cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.cfg.TLSCA, "tls-ca", "", "PEM CA bundle trusted for services in other processes (split mode with TLS); default the system's roots")
	fs.StringVar(&f.cfg.Auth, "auth", "on", "access control: on (every call needs a token: $OPSUITE_ADMIN_TOKEN or one printed at the first start) or off")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
}

// applyEnv sets every flag not given on the command line from OPSUITE_<FLAG>
// (upper case, '-' as '_'), so flags and environment say the same things.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			return
		}
		name := "OPSUITE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func (f *serverFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", f.logFormat)
}

func (f *serverFlags) run(cmd *cobra.Command, stdout, stderr io.Writer) error {
	if err := applyEnv(cmd.Flags()); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	f.cfg.ShutdownTimeout = f.shutdownWait
	f.cfg.Version = buildVersion()
	// Secrets come from the environment only: a flag would show in ps.
	f.cfg.AdminToken = os.Getenv("OPSUITE_ADMIN_TOKEN")
	f.cfg.ServiceToken = os.Getenv("OPSUITE_SERVICE_TOKEN")
	return suite.Run(cmd.Context(), f.cfg, log, stdout)
}

func newUpCmd(stdout, stderr io.Writer) *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run every service, the gateway and an embedded NATS server in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.cfg.Targets = suite.AllTargets
			return f.run(cmd, stdout, stderr)
		},
	}
	f.bind(cmd.Flags())
	cmd.Flags().BoolVar(&f.cfg.Demo, "demo", false, "once ready, run the bundled example end to end (pipeline: build, test, canary deploy, health gate), print the report, keep running")
	return cmd
}

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	f := &serverFlags{}
	var targets []string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run chosen components (split mode), usually against an external NATS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			f.cfg.Targets = nil
			for _, t := range targets {
				if t = strings.TrimSpace(t); t != "" && t != "all" {
					f.cfg.Targets = append(f.cfg.Targets, t)
				}
			}
			return f.run(cmd, stdout, stderr)
		},
	}
	f.bind(cmd.Flags())
	cmd.Flags().StringSliceVar(&targets, "target", []string{"all"}, "components to run: "+strings.Join(suite.AllTargets, ", ")+" or all")
	cmd.Flags().StringVar(&f.cfg.NATSURL, "nats-url", "", "URL of an external NATS server; empty embeds one")
	cmd.Flags().StringVar(&f.cfg.ReplicaID, "replica-id", "", "names this process among replicas of a service sharing one NATS (unique per live process; a restart with the same id resumes its work at once); default: the one kept in <data-dir>/replica-id (for a health-checker on an external NATS, random per start)")
	cmd.Flags().IntVar(&f.cfg.StoreReplicas, "store-replicas", 1, "JetStream replicas of every stream and bucket the services create: 1, or 3 or 5 on a clustered NATS (--nats-url)")
	cmd.Flags().StringVar(&f.cfg.HealthCheckerAddr, "healthchecker-addr", "", "host:port of the health-checker when the gateway, deployer or pipeline-runner runs without it")
	cmd.Flags().StringVar(&f.cfg.DeployerAddr, "deployer-addr", "", "host:port of the deployer when the gateway or pipeline-runner runs without it")
	cmd.Flags().StringVar(&f.cfg.MonitorAddr, "monitor-addr", "", "host:port of the monitor when the gateway or deployer runs without it")
	cmd.Flags().StringVar(&f.cfg.LogAggregatorAddr, "logaggregator-addr", "", "host:port of the log-aggregator when the gateway runs without it")
	cmd.Flags().StringVar(&f.cfg.PipelineRunnerAddr, "pipelinerunner-addr", "", "host:port of the pipeline-runner when the gateway runs without it")
	return cmd
}

// newProbeCmd checks a running process's /readyz, for container health
// checks in images without a shell or curl.
func newProbeCmd() *cobra.Command {
	addr := "127.0.0.1:8080"
	timeout := 3 * time.Second
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Exit 0 when the opsuite process at --http-addr is ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("not reachable: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready (HTTP %d): %s", resp.StatusCode, strings.TrimSpace(string(body)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ready")
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "http-addr", addr, "host:port of the process's HTTP endpoint")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for an answer")
	return cmd
}
