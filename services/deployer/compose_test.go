package deployer_test

import (
	"context"
	"strings"
	"testing"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/demoapp"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestImportComposeRejectsUnsupportedKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts services")
	}
	s := newSuite(t)
	for _, tc := range []struct{ name, project, content, want string }{
		{"build", "shop", "services:\n  web:\n    build: .\n", "services.web.build"},
		{"privileged", "shop", "services:\n  web:\n    image: nginx\n    privileged: true\n", "services.web.privileged"},
		{"malformed", "shop", "services:\n  web: [\n", "invalid"},
		{"bad project", "Shop!", "services:\n  web:\n    image: nginx\n", "project"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client.ImportCompose(t.Context(), &deployerv1.ImportComposeRequest{Project: tc.project, Content: tc.content})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument naming %s", err, tc.want)
			}
		})
	}
}

// TestImportAndStopComposeOnDocker deploys a compose file's services as
// containers, then stops them.
func TestImportAndStopComposeOnDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers")
	}
	ctx := context.Background()
	drv := demoapp.Docker(t)
	image := demoapp.Image(t)
	s := newSuiteWith(t, map[string]driver.Driver{"docker": drv})
	content := `services:
  web:
    image: ` + image + `
    ports: ["8080"]
    environment: {VERSION: compose, PORT: "8080", BIND: 0.0.0.0}
    deploy: {replicas: 2}
    healthcheck: {test: ["CMD", "/demoapp", "-h"], disable: true}
  api:
    image: ` + image + `
    ports: ["8080"]
    environment: {VERSION: api, PORT: "8080", BIND: 0.0.0.0}
`
	resp, err := s.client.ImportCompose(t.Context(), &deployerv1.ImportComposeRequest{Project: "demo", Content: content})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetApplications()) != 2 || len(resp.GetRollouts()) != 2 {
		t.Fatalf("import: %d applications, %d rollouts", len(resp.GetApplications()), len(resp.GetRollouts()))
	}
	for _, r := range resp.GetRollouts() {
		got := s.waitRolloutOf(t, r.GetApplication(), r.GetId())
		if got.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
			t.Fatalf("%s: %s: %s", r.GetApplication(), got.GetPhase(), got.GetMessage())
		}
	}
	reps, err := drv.List(ctx, map[string]string{driver.LabelApp: "demo-web"})
	if err != nil || len(reps) != 2 {
		t.Fatalf("demo-web containers: %d %v, want 2", len(reps), err)
	}
	stop, err := s.client.StopCompose(t.Context(), &deployerv1.StopComposeRequest{Project: "demo", Remove: true})
	if err != nil || len(stop.GetApplications()) != 2 {
		t.Fatalf("stop: %v %v", stop, err)
	}
	for _, app := range []string{"demo-web", "demo-api"} {
		if reps, _ := drv.List(ctx, map[string]string{driver.LabelApp: app}); len(reps) != 0 {
			t.Fatalf("%s: %d containers left", app, len(reps))
		}
	}
	if _, err := s.client.StopCompose(t.Context(), &deployerv1.StopComposeRequest{Project: "demo"}); status.Code(err) != codes.NotFound {
		t.Fatalf("stopping a removed project: %v, want NotFound", err)
	}
}
