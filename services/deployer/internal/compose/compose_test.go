package compose_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/appspec"
	"github.com/opsuite/opsuite/services/deployer/internal/compose"
)

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func labels(service string) map[string]string {
	return map[string]string{compose.LabelProject: "shop", compose.LabelService: service}
}

func TestConvertShop(t *testing.T) {
	tcp, udp := deployerv1.PortProtocol_PORT_PROTOCOL_TCP, deployerv1.PortProtocol_PORT_PROTOCOL_UDP
	want := []*deployerv1.Application{
		{
			Name:           "shop-db",
			Labels:         labels("db"),
			ComposeProject: "shop",
			Spec: &deployerv1.ApplicationSpec{
				Workload: &deployerv1.ApplicationSpec_Image{Image: "postgres:16"},
				Env: []*deployerv1.EnvVar{
					{Name: "POSTGRES_DB", Value: "shop"},
					{Name: "POSTGRES_USER", Value: "shop"},
				},
				Ports: []*deployerv1.Port{
					{ContainerPort: 5432, Protocol: tcp, HostPort: 5432},
					{ContainerPort: 5353, Protocol: udp},
				},
				Volumes: []*deployerv1.Volume{
					{Target: "/var/lib/postgresql/data", Source: &deployerv1.Volume_NamedVolume{NamedVolume: "shop_dbdata"}},
					{Target: "/shared", Source: &deployerv1.Volume_NamedVolume{NamedVolume: "shared"}, ReadOnly: true},
				},
				Replicas:       1,
				RollbackPolicy: noVerification,
			},
		},
		{
			Name:           "shop-web",
			Labels:         labels("web"),
			ComposeProject: "shop",
			Spec: &deployerv1.ApplicationSpec{
				Workload:   &deployerv1.ApplicationSpec_Image{Image: "ghcr.io/example/shop-web:1.4"},
				Args:       []string{"serve", "--addr=:80"},
				WorkingDir: "/srv",
				Env: []*deployerv1.EnvVar{
					{Name: "DATABASE_URL", Value: "postgres://shop@db:5432/shop"},
					{Name: "LOG_LEVEL", Value: "info"},
					{Name: "ZONE", Value: "eu-1"},
				},
				Ports: []*deployerv1.Port{
					{ContainerPort: 80, Protocol: tcp, HostPort: 8080},
					{Name: "metrics", ContainerPort: 9090, Protocol: tcp},
				},
				Replicas:       3,
				RollbackPolicy: noVerification,
				Resources:      &deployerv1.Resources{Cpus: 0.5, MemoryBytes: 256 << 20},
				HealthCheck: &deployerv1.HealthCheck{
					Probe: &deployerv1.HealthCheck_Exec{Exec: &deployerv1.ExecProbe{
						Argv: []string{"wget", "-q", "-O-", "http://localhost/healthz"},
					}},
					Interval:         durationpb.New(10 * time.Second),
					Timeout:          durationpb.New(2 * time.Second),
					InitialDelay:     durationpb.New(15 * time.Second),
					FailureThreshold: 5,
				},
				RestartPolicy:   deployerv1.RestartPolicy_RESTART_POLICY_ALWAYS,
				StopGracePeriod: durationpb.New(20 * time.Second),
			},
		},
		{
			Name:           "shop-worker",
			Labels:         labels("worker"),
			ComposeProject: "shop",
			Spec: &deployerv1.ApplicationSpec{
				Workload: &deployerv1.ApplicationSpec_Image{Image: "ghcr.io/example/shop-worker:1.4"},
				Command:  []string{"/bin/worker"},
				Args:     []string{"--queue", "orders"},
				Env: []*deployerv1.EnvVar{
					{Name: "CONCURRENCY", Value: "4"},
					{Name: "LOG_LEVEL", Value: "debug"},
				},
				Volumes: []*deployerv1.Volume{
					{Target: "/spool", Source: &deployerv1.Volume_HostPath{HostPath: "/var/lib/shop/spool"}, ReadOnly: true},
					{Target: "/tmp", Source: &deployerv1.Volume_Tmpfs{Tmpfs: &deployerv1.TmpfsVolume{SizeBytes: 64 << 20}}},
				},
				Replicas:       1,
				RollbackPolicy: noVerification,
				HealthCheck: &deployerv1.HealthCheck{
					Probe: &deployerv1.HealthCheck_Exec{Exec: &deployerv1.ExecProbe{
						Argv: []string{"sh", "-c", "pgrep worker"},
					}},
				},
			},
		},
	}

	got, err := compose.Convert(context.Background(), "shop", readFixture(t, "shop.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Convert (-want +got):\n%s", diff)
	}
	for _, app := range got {
		if err := appspec.Validate(app); err != nil {
			t.Errorf("converted %s does not validate: %v", app.GetName(), err)
		}
	}
}

func TestConvertUnsupported(t *testing.T) {
	for _, tc := range []struct {
		file, key string
	}{
		{"build", "services.web.build"},
		{"privileged", "services.web.privileged"},
		{"cap_add", "services.web.cap_add"},
		{"devices", "services.web.devices"},
		{"network_mode", "services.web.network_mode"},
		{"pid", "services.web.pid"},
		{"ipc", "services.web.ipc"},
		{"secrets", "services.web.secrets"},
		{"configs", "configs"},
		{"networks", "services.web.networks.front"},
		{"env_file", "services.web.env_file"},
		{"extends", "services.web.extends"},
		{"include", "include"},
		{"deploy_placement", "services.web.deploy.placement"},
		{"volume_driver", "volumes.data.driver"},
		{"relative_bind", "services.web.volumes[0].source"},
		{"host_env", "services.web.environment.HOME"},
		{"port_range", "services.web.ports[0].published"},
		{"healthcheck_start_interval", "services.web.healthcheck.start_interval"},
		{"restart_retries", "services.web.restart"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := compose.Convert(context.Background(), "shop", readFixture(t, "unsupported/"+tc.file+".yaml"), nil)
			if !errors.Is(err, compose.ErrUnsupported) {
				t.Fatalf("err = %v, want ErrUnsupported", err)
			}
			if !strings.Contains(err.Error(), tc.key+": not supported") {
				t.Errorf("err = %q, want it to name %s", err, tc.key)
			}
		})
	}
}

func TestConvertBuildMessage(t *testing.T) {
	_, err := compose.Convert(context.Background(), "shop", readFixture(t, "unsupported/build.yaml"), nil)
	want := "services.web.build: not supported: the deployer runs existing images; build them first"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestConvertInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		project string
		data    []byte
		want    string // in the message
	}{
		{"bad indent", "shop", readFixture(t, "invalid/bad_indent.yaml"), "line 3"},
		{"not a map", "shop", readFixture(t, "invalid/not_a_map.yaml"), ""},
		{"wrong type", "shop", readFixture(t, "invalid/unknown_field_type.yaml"), "ports"},
		{"tab", "shop", readFixture(t, "invalid/tab.yaml"), "line 2"},
		{"undefined volume", "shop", readFixture(t, "invalid/missing_volume.yaml"), "data"},
		{"no image", "shop", readFixture(t, "invalid/no_image.yaml"), `service "web"`},
		{"empty", "shop", nil, "empty"},
		{"too large", "shop", make([]byte, compose.MaxFileBytes+1), "over the limit"},
		{"bad project", "Shop!", readFixture(t, "shop.yaml"), "Shop!"},
		{"service name", "shop", []byte("services:\n  Web_1:\n    image: nginx\n"), "services.Web_1"},
		{"service name too long", "shop", []byte("services:\n  " + strings.Repeat("a", 60) + ":\n    image: nginx\n"), "services." + strings.Repeat("a", 60)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compose.Convert(context.Background(), tc.project, tc.data, nil)
			if !errors.Is(err, compose.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConvertCollectsErrorsPerService(t *testing.T) {
	data := []byte("services:\n  b:\n    image: nginx\n    privileged: true\n  a:\n    image: nginx\n    cap_add: [ALL]\n")
	_, err := compose.Convert(context.Background(), "shop", data, nil)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	a, b := strings.Index(msg, "services.a.cap_add"), strings.Index(msg, "services.b.privileged")
	if a < 0 || b < 0 || a > b {
		t.Errorf("err = %q, want both services named, a before b", msg)
	}
}

func TestConvertNoHostEnvironment(t *testing.T) {
	t.Setenv("OPSUITE_COMPOSE_SECRET", "leaked")
	data := []byte("services:\n  web:\n    image: nginx\n    environment:\n      A: ${OPSUITE_COMPOSE_SECRET:-none}\n")
	apps, err := compose.Convert(context.Background(), "shop", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := apps[0].GetSpec().GetEnv()[0].GetValue(); got != "none" {
		t.Errorf("A = %q, want the default, not the host value", got)
	}
}

func TestConvertInterpolatesTheGivenVariables(t *testing.T) {
	data := []byte("services:\n  web:\n    image: shop/web:${TAG}\n    environment:\n      MODE: ${MODE:-dev}\n      REQUIRED: ${REQUIRED:?set REQUIRED}\n")
	apps, err := compose.Convert(context.Background(), "shop", data, map[string]string{"TAG": "1.4", "REQUIRED": "yes"})
	if err != nil {
		t.Fatal(err)
	}
	spec := apps[0].GetSpec()
	if spec.GetImage() != "shop/web:1.4" {
		t.Errorf("image = %q, want the TAG variable applied", spec.GetImage())
	}
	env := map[string]string{}
	for _, e := range spec.GetEnv() {
		env[e.GetName()] = e.GetValue()
	}
	if env["MODE"] != "dev" || env["REQUIRED"] != "yes" {
		t.Errorf("env = %v", env)
	}
	// A required variable left out is an error that names it.
	_, err = compose.Convert(context.Background(), "shop", data, map[string]string{"TAG": "1"})
	if !errors.Is(err, compose.ErrInvalid) || !strings.Contains(err.Error(), "set REQUIRED") {
		t.Errorf("missing required variable: %v", err)
	}
}

func TestConvertCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := compose.Convert(ctx, "shop", readFixture(t, "shop.yaml"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func FuzzConvert(f *testing.F) {
	for _, dir := range []string{"testdata", "testdata/unsupported", "testdata/invalid"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		apps, err := compose.Convert(ctx, "fuzz", data, nil)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Convert took %v", d)
		}
		if err != nil {
			if !errors.Is(err, compose.ErrInvalid) && !errors.Is(err, compose.ErrUnsupported) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		if len(apps) == 0 {
			t.Fatal("no error and no applications")
		}
		for _, app := range apps {
			if !strings.HasPrefix(app.GetName(), "fuzz-") || app.GetSpec().GetImage() == "" {
				t.Fatalf("bad application %v", app)
			}
		}
	})
}

var noVerification = &deployerv1.RollbackPolicy{VerificationWindow: durationpb.New(0)}
