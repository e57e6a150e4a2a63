package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// rootLike builds a root command the way cmd/opsuite does.
func rootLike(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "opsuite", SilenceUsage: true, SilenceErrors: true}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(Commands(stdout, stderr)...)
	return root
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"app", "list", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"app", "get"}, 2, "accepts 1 arg"},
		{[]string{"app", "get", "a", "b"}, 2, "usage: opsuite app get NAME"},
		{[]string{"app", "list", "-o", "xml"}, 2, `-o "xml"`},
		{[]string{"app", "create"}, 2, "-f is required"},
		{[]string{"rollout"}, 2, "needs a subcommand"},
		{[]string{"rollout", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"nosuchgroup"}, 2, "unknown command"},
		{[]string{"token", "create", "x"}, 2, "--role is required"},
		{[]string{"token", "create", "x", "--role", "root"}, 2, `--role "root"`},
		{[]string{"logs", "query", "--level", "loud"}, 2, `--level "loud"`},
		{[]string{"logs", "query", "--since", "soon"}, 2, "invalid argument"},
		{[]string{"report", "--format", "pdf"}, 2, `--format "pdf"`},
		{[]string{"pipeline", "run", "p", "--var", "novalue"}, 2, "NAME=VALUE"},
		{[]string{"health", "--server", "ftp://x"}, 2, "scheme"},
		// Reaching no server is a failure, not a usage error.
		{[]string{"health", "--server", "127.0.0.1:1"}, 1, "is `opsuite up` running at http://127.0.0.1:1?"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := rootLike(&out, &errOut)
			root.SetArgs(tc.args)
			t.Setenv("OPSUITE_CONFIG", t.TempDir()+"/none.yaml")
			t.Setenv("OPSUITE_SERVER", "")
			t.Setenv("OPSUITE_TOKEN", "")
			err := root.ExecuteContext(context.Background())
			if got := ExitCode(err); got != tc.want {
				t.Fatalf("exit code %d, want %d (err %v)", got, tc.want, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want it to contain %q", err, tc.msg)
			}
		})
	}
	if ExitCode(nil) != 0 {
		t.Error("nil error is not exit 0")
	}
	if ExitCode(errors.New("rollout x ended rolled_back")) != 1 {
		t.Error("a failure is not exit 1")
	}
}

func TestEveryObjectCommandHasOutputFlag(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		name := c.CommandPath()
		if !c.Runnable() || c.HasSubCommands() || strings.HasSuffix(name, " delete") || c.Flags().Lookup("format") != nil {
			return
		}
		if c.Flags().Lookup("output") == nil {
			t.Errorf("%s has no -o", name)
		}
	}
	for _, c := range Commands(io.Discard, io.Discard) {
		walk(c)
	}
}

func TestResolvePrecedence(t *testing.T) {
	file := []byte("server: file.example:9000\ntoken: from-file\n")
	read := func(found bool) func(string) ([]byte, error) {
		return func(string) ([]byte, error) {
			if !found {
				return nil, fs.ErrNotExist
			}
			return file, nil
		}
	}
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		name                  string
		flagServer, flagToken string
		env                   map[string]string
		file                  bool
		server, token         string
		tokenFrom             string
	}{
		{"defaults", "", "", nil, false, "http://127.0.0.1:8080", "", "default"},
		{"file", "", "", nil, true, "http://file.example:9000", "from-file", "/cfg.yaml"},
		{"env over file", "", "", map[string]string{"OPSUITE_SERVER": "https://env.example/", "OPSUITE_TOKEN": "from-env"}, true, "https://env.example", "from-env", "$OPSUITE_TOKEN"},
		{"flag over env", "flag.example:1", "from-flag", map[string]string{"OPSUITE_SERVER": "env.example:2", "OPSUITE_TOKEN": "from-env"}, true, "http://flag.example:1", "from-flag", "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{"OPSUITE_CONFIG": "/cfg.yaml"}
			for k, v := range tc.env {
				vars[k] = v
			}
			s, err := Resolve(tc.flagServer, tc.flagToken, "", env(vars), read(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if s.Server != tc.server || s.Token != tc.token || s.TokenFrom != tc.tokenFrom {
				t.Fatalf("got server %q token %q from %q, want %q %q from %q", s.Server, s.Token, s.TokenFrom, tc.server, tc.token, tc.tokenFrom)
			}
		})
	}
}

func TestResolveConfigErrors(t *testing.T) {
	env := func(string) string { return "" }
	// A config file named explicitly must exist; the default one may not.
	if _, err := Resolve("", "", "/missing.yaml", env, func(string) ([]byte, error) { return nil, fs.ErrNotExist }); err == nil {
		t.Error("a missing --config file was accepted")
	}
	if _, err := Resolve("", "", "", env, func(string) ([]byte, error) { return nil, fs.ErrNotExist }); err != nil {
		t.Errorf("a missing default config file: %v", err)
	}
	_, err := Resolve("", "", "", env, func(string) ([]byte, error) { return []byte("sever: x\n"), nil })
	if err == nil || !strings.Contains(err.Error(), "sever") {
		t.Errorf("a misspelt key: %v", err)
	}
}

func TestDefaultConfigPath(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OPSUITE_CONFIG": "/x.yaml", "HOME": "/h"}, "/x.yaml"},
		{map[string]string{"XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}, "/xdg/opsuite/config.yaml"},
		{map[string]string{"HOME": "/h"}, "/h/.config/opsuite/config.yaml"},
	} {
		if got := DefaultConfigPath(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestNormalizeServer(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"127.0.0.1:8080", "http://127.0.0.1:8080", ""},
		{"https://ops.example.com/", "https://ops.example.com", ""},
		{"http://h:1/base/", "http://h:1/base", ""},
		{"", "", "empty"},
		{"ftp://h", "", "scheme"},
		{"http://", "", "no host"},
	} {
		got, err := NormalizeServer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
