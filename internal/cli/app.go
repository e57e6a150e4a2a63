package cli

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func (e *env) appCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "app",
		Aliases: []string{"apps", "application"},
		Short:   "Applications of the deployer: list, get, create, deploy, delete",
	}
	c.AddCommand(e.appListCmd(), e.appGetCmd(), e.appCreateCmd(), e.appDeployCmd(), e.appDeleteCmd())
	return c
}

func (e *env) appListCmd() *cobra.Command {
	var out, selector, environment string
	c := &cobra.Command{
		Use:   "list",
		Short: "List applications, one row per environment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			setIf(q, "label_selector", selector)
			setIf(q, "environment", environment)
			resp := &deployerv1.ListApplicationsResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/applications", q, nil, resp); err != nil {
				return fmt.Errorf("list applications: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return ApplicationsTable(resp.GetApplications(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVarP(&selector, "selector", "l", "", "only applications whose labels match, e.g. team=web,tier!=batch")
	c.Flags().StringVar(&environment, "env", "", "only applications with this environment")
	return c
}

// ApplicationsTable is one row per application environment.
func ApplicationsTable(apps []*deployerv1.Application, now time.Time) *table {
	t := newTable("NAME", "ENV", "REVISION", "READY", "HEALTH", "LAST ROLLOUT", "ENDPOINT", "AGE")
	for _, a := range apps {
		envs := a.GetEnvironments()
		if len(envs) == 0 {
			t.add(a.GetName(), "", revText(a.GetLatestRevision()), "", "", "", "", Age(a.GetCreateTime(), now))
			continue
		}
		for _, env := range envs {
			st := env.GetStatus()
			t.add(a.GetName(), env.GetName(), revText(st.GetCurrentRevision()),
				fmt.Sprintf("%d/%d", st.GetReadyReplicas(), st.GetDesiredReplicas()),
				EnumName(st.GetHealth()), EnumName(st.GetLastRolloutPhase()), st.GetEndpoint(), Age(a.GetCreateTime(), now))
		}
	}
	return t
}

func revText(n uint32) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(n), 10)
}

func (e *env) appGetCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:               "get NAME",
		Short:             "Show an application with where each environment stands",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: e.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &deployerv1.GetApplicationResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/applications/"+url.PathEscape(args[0]), nil, nil, resp); err != nil {
				return fmt.Errorf("get application %s: %w", args[0], err)
			}
			return printObject(e.stdout, out, resp.GetApplication(), func() *table {
				return ApplicationsTable([]*deployerv1.Application{resp.GetApplication()}, time.Now())
			})
		},
	}
	outputFlag(c.Flags(), &out)
	return c
}

func (e *env) appCreateCmd() *cobra.Command {
	var out, file string
	var validateOnly bool
	c := &cobra.Command{
		Use:   "create -f app.yaml",
		Short: "Create an application from a file (YAML or JSON, the shape of opsuite.deployer.v1.Application)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if file == "" {
				return usagef("-f is required: the application file (- for standard input)")
			}
			app, err := e.loadApp(cmd, file)
			if err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			req := &deployerv1.CreateApplicationRequest{Application: app, ValidateOnly: validateOnly}
			resp := &deployerv1.CreateApplicationResponse{}
			q := url.Values{}
			if validateOnly {
				q.Set("validate_only", "true")
			}
			if err := cl.do(cmd.Context(), http.MethodPost, "/v1/applications", q, req.GetApplication(), resp); err != nil {
				return fmt.Errorf("create application %s: %w", app.GetName(), err)
			}
			if out == "table" {
				verb := "created"
				if validateOnly {
					verb = "is valid"
				}
				_, err := fmt.Fprintf(e.stdout, "application %s %s\n", resp.GetApplication().GetName(), verb)
				return err
			}
			return printObject(e.stdout, out, resp.GetApplication(), nil)
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "application file, YAML or JSON (- for standard input)")
	c.Flags().BoolVar(&validateOnly, "dry-run", false, "validate on the server without creating")
	outputFlag(c.Flags(), &out)
	return c
}

func (e *env) loadApp(cmd *cobra.Command, file string) (*deployerv1.Application, error) {
	data, err := readInput(file, cmd.InOrStdin())
	if err != nil {
		return nil, err
	}
	app, err := DecodeApplication(data)
	if err != nil {
		return nil, fmt.Errorf("application file %s: %w", file, err)
	}
	return app, nil
}

func (e *env) appDeployCmd() *cobra.Command {
	var (
		out, file, environment, reason string
		revision                       uint32
		wait, restart, supersede       bool
		timeout                        time.Duration
	)
	c := &cobra.Command{
		Use:   "deploy [NAME] [-f app.yaml]",
		Short: "Deploy an application: the spec in a file (creating the application when it is new), a kept revision, or its current spec",
		Long: `Deploy starts a rollout of an application in one environment.

With -f the file's spec is deployed; an application that does not exist yet
is created from the file first. Without -f, NAME's current spec is deployed
(or --revision N, a kept revision). --wait follows the rollout to its end and
exits 1 unless it succeeded.`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: e.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			var app *deployerv1.Application
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if file != "" {
				var err error
				if app, err = e.loadApp(cmd, file); err != nil {
					return err
				}
				if name != "" && name != app.GetName() {
					return usagef("NAME %q differs from the file's name %q", name, app.GetName())
				}
				name = app.GetName()
				if revision != 0 {
					return usagef("--revision and -f exclude each other")
				}
			}
			if name == "" {
				return usagef("name the application or give its file with -f")
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := &deployerv1.DeployRequest{Name: name, Environment: environment, Restart: restart, Supersede: supersede, Reason: reason}
			if revision != 0 {
				req.Source = &deployerv1.DeployRequest_Revision{Revision: revision}
			}
			if app != nil {
				created, err := e.ensureApp(cmd, cl, app)
				if err != nil {
					return err
				}
				if !created {
					req.Source = &deployerv1.DeployRequest_Spec{Spec: app.GetSpec()}
				}
			}
			resp := &deployerv1.DeployResponse{}
			if err := cl.do(ctx, http.MethodPost, "/v1/applications/"+url.PathEscape(name)+":deploy", nil, req, resp); err != nil {
				return fmt.Errorf("deploy %s: %w", name, err)
			}
			r := resp.GetRollout()
			if out != "table" {
				if err := printObject(e.stdout, out, resp, nil); err != nil {
					return err
				}
			} else if resp.GetUnchanged() {
				fmt.Fprintf(e.stdout, "%s: unchanged, revision %d already serves in %s (rollout %s)\n", name, resp.GetRevision().GetNumber(), r.GetEnvironment(), r.GetId())
			} else {
				fmt.Fprintf(e.stdout, "%s: rollout %s started, revision %d → %d in %s\n", name, r.GetId(), r.GetFromRevision(), r.GetToRevision(), r.GetEnvironment())
			}
			if !wait || resp.GetUnchanged() {
				return nil
			}
			wctx, cancel := waitCtx(ctx, timeout)
			defer cancel()
			progressOut := e.stdout
			if out != "table" {
				progressOut = e.stderr
			}
			return e.followRollout(wctx, cl, progressOut, name, r.GetId())
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "application file, YAML or JSON (- for standard input)")
	c.Flags().StringVar(&environment, "env", "", "environment (default: the application's first)")
	c.Flags().Uint32Var(&revision, "revision", 0, "deploy this kept revision")
	c.Flags().BoolVar(&wait, "wait", false, "follow the rollout until it ends; exit 1 unless it succeeded")
	c.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (0: no limit)")
	c.Flags().BoolVar(&restart, "restart", false, "replace every replica even when the revision already serves")
	c.Flags().BoolVar(&supersede, "supersede", false, "abort a rollout in progress and roll on from where it stands")
	c.Flags().StringVar(&reason, "reason", "", "recorded on the revision and the rollout")
	outputFlag(c.Flags(), &out)
	return c
}

// ensureApp creates app when it does not exist yet and reports whether it
// did.
func (e *env) ensureApp(cmd *cobra.Command, cl *client, app *deployerv1.Application) (bool, error) {
	cur := &deployerv1.GetApplicationResponse{}
	err := cl.do(cmd.Context(), http.MethodGet, "/v1/applications/"+url.PathEscape(app.GetName()), nil, nil, cur)
	var ae *APIError
	switch {
	case err == nil:
		if fields := UnappliedFields(cur.GetApplication(), app); len(fields) > 0 {
			fmt.Fprintf(e.stderr, "warning: %s in %s differ from the application on the server; deploy changes only the spec\n",
				strings.Join(fields, ", "), app.GetName())
		}
		return false, nil
	case errors.As(err, &ae) && ae.Code == codes.NotFound:
	default:
		return false, fmt.Errorf("get application %s: %w", app.GetName(), err)
	}
	if err := cl.do(cmd.Context(), http.MethodPost, "/v1/applications", nil, app, &deployerv1.CreateApplicationResponse{}); err != nil {
		return false, fmt.Errorf("create application %s: %w", app.GetName(), err)
	}
	fmt.Fprintf(e.stderr, "application %s created\n", app.GetName())
	return true, nil
}

// UnappliedFields names what a deploy of file leaves as it is on the
// server: the fields besides the spec that differ.
func UnappliedFields(server, file *deployerv1.Application) []string {
	var out []string
	if server.GetDescription() != file.GetDescription() {
		out = append(out, "description")
	}
	if !maps.Equal(server.GetLabels(), file.GetLabels()) {
		out = append(out, "labels")
	}
	strip := func(envs []*deployerv1.Environment) []*deployerv1.Environment {
		var res []*deployerv1.Environment
		for _, e := range envs {
			c := proto.Clone(e).(*deployerv1.Environment)
			c.Status = nil
			res = append(res, c)
		}
		return res
	}
	se, fe := strip(server.GetEnvironments()), strip(file.GetEnvironments())
	// A file without environments means the one named "default".
	if len(fe) == 0 && len(se) == 1 && se[0].GetName() == "default" && proto.Equal(se[0], &deployerv1.Environment{Name: "default"}) {
		return out
	}
	if !slices.EqualFunc(se, fe, func(a, b *deployerv1.Environment) bool { return proto.Equal(a, b) }) {
		out = append(out, "environments")
	}
	return out
}

func (e *env) appDeleteCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete an application and stop its replicas",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: e.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if force {
				q.Set("force", "true")
			}
			if err := cl.do(cmd.Context(), http.MethodDelete, "/v1/applications/"+url.PathEscape(args[0]), q, nil, nil); err != nil {
				return fmt.Errorf("delete application %s: %w", args[0], err)
			}
			_, err = fmt.Fprintf(e.stdout, "application %s deleted\n", args[0])
			return err
		},
	}
	c.Flags().BoolVar(&force, "force", false, "abort a rollout in progress instead of refusing")
	return c
}

// completeApps completes application names from the server.
func (e *env) completeApps(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := e.client(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	resp := &deployerv1.ListApplicationsResponse{}
	if err := cl.do(cmd.Context(), http.MethodGet, "/v1/applications", nil, nil, resp); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, a := range resp.GetApplications() {
		names = append(names, a.GetName())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func setIf(q url.Values, key, val string) {
	if val != "" {
		q.Set(key, val)
	}
}
