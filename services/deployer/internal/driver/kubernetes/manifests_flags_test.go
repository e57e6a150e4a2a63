package kubernetes_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// envOnly are the variables cmd/opsuite reads directly (secrets: a flag
// would show in ps), not as the twin of a flag.
var envOnly = []string{"OPSUITE_ADMIN_TOKEN", "OPSUITE_SERVICE_TOKEN"}

var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)

// TestManifestsEnvNamesAreFlags builds the opsuite binary and checks that
// every OPSUITE_* variable the manifests give an opsuite container is the
// twin of a flag of `opsuite serve` (a misspelt one would be ignored
// without a word), and that every flag in the containers' args exists.
func TestManifestsEnvNamesAreFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the opsuite binary")
	}
	set := loadManifests(t)
	bin := filepath.Join(t.TempDir(), "opsuite")
	ctx := ctxFor(t, 10*time.Minute)
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/opsuite/opsuite/cmd/opsuite").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/opsuite: %v\n%s", err, out)
	}
	help, err := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("opsuite serve --help: %v\n%s", err, help)
	}
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(string(help), -1) {
		flags[m[1]] = true
	}
	if !flags["nats-url"] || !flags["target"] {
		t.Fatalf("cannot read the flags from `opsuite serve --help`:\n%s", help)
	}
	checked := 0
	for _, b := range set.builds {
		for _, w := range workloadsOf(b) {
			if w.template.Labels[labelName] != "opsuite" {
				continue
			}
			for _, c := range w.template.Spec.Containers {
				where := w.String() + " container " + c.Name
				for name := range containerEnv(t, b, w.namespace, c) {
					if !strings.HasPrefix(name, "OPSUITE_") || slices.Contains(envOnly, name) {
						continue
					}
					checked++
					if flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "OPSUITE_"), "_", "-")); !flags[flag] {
						t.Errorf("%s: %s is not the twin of a flag of opsuite serve (no --%s)", where, name, flag)
					}
				}
				if len(c.Args) == 0 || c.Args[0] != "serve" {
					t.Errorf("%s: args %v do not start with serve", where, c.Args)
					continue
				}
				for _, a := range c.Args[1:] {
					flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					checked++
					if !strings.HasPrefix(a, "--") || !flags[flag] {
						t.Errorf("%s: argument %q is not a flag of opsuite serve", where, a)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no opsuite container settings to check")
	}
	t.Logf("%d settings of opsuite containers are flags of `opsuite serve`", checked)
}
