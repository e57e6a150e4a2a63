// Package cli is the client side of the opsuite binary: a command group per
// service (app, rollout, pipeline, alerts, logs, health, report, token,
// whoami) that talks to the REST gateway, decodes answers into the generated
// types and prints them as a table, JSON or YAML.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Commands returns the client command groups, each with the connection
// flags (--server, --token, --config) on all of its subcommands.
func Commands(stdout, stderr io.Writer) []*cobra.Command {
	e := &env{stdout: stdout, stderr: stderr}
	cmds := []*cobra.Command{
		e.appCmd(),
		e.rolloutCmd(),
		e.pipelineCmd(),
		e.alertsCmd(),
		e.logsCmd(),
		e.healthCmd(),
		e.reportCmd(),
		e.tokenCmd(),
		e.whoamiCmd(),
	}
	for _, c := range cmds {
		e.conn.bind(c.PersistentFlags())
		markUsage(c)
	}
	return cmds
}

// env is what every command shares: where output goes and how to reach
// the server.
type env struct {
	stdout io.Writer
	stderr io.Writer
	conn   connFlags
}

// UsageError is a command line the command cannot run: a bad flag, a
// missing argument, a value out of range. It exits with status 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCode is the process status for err: 0 for nil, 2 for usage errors
// (including cobra's own flag and argument errors), 1 otherwise.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		return 2
	}
	// Errors cobra raises before any command of ours runs: an unknown
	// command or a flag of the root command.
	msg := err.Error()
	for _, p := range []string{"unknown command ", "unknown flag: ", "unknown shorthand flag: ", "flag needs an argument: ", "invalid argument ", "required flag(s) "} {
		if strings.HasPrefix(msg, p) {
			return 2
		}
	}
	return 1
}

// markUsage makes flag and argument errors of c and its subcommands usage
// errors, and has each print its usage line with them.
func markUsage(c *cobra.Command) {
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &UsageError{Err: fmt.Errorf("%w\nsee '%s --help'", err, cmd.CommandPath())}
	})
	if c.Args != nil {
		args := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &UsageError{Err: fmt.Errorf("%w\nusage: %s", err, cmd.UseLine())}
			}
			return nil
		}
	}
	if c.RunE == nil && c.Run == nil && c.HasSubCommands() {
		// A group alone or with an unknown subcommand.
		c.Args = func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return &UsageError{Err: fmt.Errorf("unknown command %q for %q\nsee '%s --help'", a[0], cmd.CommandPath(), cmd.CommandPath())}
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			return &UsageError{Err: fmt.Errorf("%s needs a subcommand: %s\nsee '%s --help'", cmd.CommandPath(), subNames(cmd), cmd.CommandPath())}
		}
	}
	for _, sub := range c.Commands() {
		markUsage(sub)
	}
}

func subNames(c *cobra.Command) string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return strings.Join(names, ", ")
}

// outputFlag adds -o to a command that prints objects.
func outputFlag(fs *pflag.FlagSet, o *string) {
	*o = "table"
	fs.StringVarP(o, "output", "o", "table", "output format: table, json or yaml")
}

func checkOutput(o string) error {
	switch o {
	case "table", "json", "yaml":
		return nil
	}
	return usagef("-o %q: use table, json or yaml", o)
}
