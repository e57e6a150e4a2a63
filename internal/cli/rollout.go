package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func (e *env) rolloutCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "rollout",
		Aliases: []string{"rollouts"},
		Short:   "Rollouts of an application: list, status, promote, abort, rollback",
	}
	c.AddCommand(e.rolloutListCmd(), e.rolloutStatusCmd(), e.rolloutPromoteCmd(), e.rolloutAbortCmd(), e.rolloutRollbackCmd())
	return c
}

func appPath(app string) string { return "/v1/applications/" + url.PathEscape(app) }

func (e *env) rolloutListCmd() *cobra.Command {
	var out, environment string
	var limit int32
	c := &cobra.Command{
		Use:               "list APP",
		Short:             "List an application's rollouts, newest first",
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
			q := url.Values{}
			setIf(q, "environment", environment)
			if limit > 0 {
				q.Set("page_size", strconv.Itoa(int(limit)))
			}
			resp := &deployerv1.ListRolloutsResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, appPath(args[0])+"/rollouts", q, nil, resp); err != nil {
				return fmt.Errorf("list rollouts of %s: %w", args[0], err)
			}
			return printObject(e.stdout, out, resp, func() *table { return RolloutsTable(resp.GetRollouts(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&environment, "env", "", "only rollouts of this environment")
	c.Flags().Int32Var(&limit, "limit", 0, "at most this many (server default 50)")
	return c
}

// RolloutsTable is one row per rollout.
func RolloutsTable(rs []*deployerv1.Rollout, now time.Time) *table {
	t := newTable("ID", "ENV", "KIND", "REVISION", "PHASE", "STEP", "WEIGHT", "NEW", "DURATION", "AGE", "MESSAGE")
	for _, r := range rs {
		step := ""
		if n := len(r.GetSteps()); n > 0 {
			step = fmt.Sprintf("%d/%d", min(int(r.GetCurrentStepIndex()), n), n)
		}
		t.add(r.GetId(), r.GetEnvironment(), EnumName(r.GetKind()),
			fmt.Sprintf("%d→%d", r.GetFromRevision(), r.GetToRevision()), EnumName(r.GetPhase()), step,
			fmt.Sprintf("%d%%", r.GetCanaryWeight()), fmt.Sprintf("%d/%d", r.GetUpdatedReplicas(), r.GetDesiredReplicas()),
			durationText(r.GetDuration()), Age(r.GetCreateTime(), now), ellipsis(r.GetMessage(), 60))
	}
	return t
}

// RolloutTable is the detail of one rollout: a row per step.
func RolloutTable(r *deployerv1.Rollout) *table {
	t := newTable("STEP", "KIND", "DESCRIPTION", "STATE", "WEIGHT", "NEW", "OLD", "MESSAGE")
	for _, s := range r.GetSteps() {
		t.add(strconv.Itoa(int(s.GetIndex())+1), EnumName(s.GetKind()), s.GetDescription(), EnumName(s.GetState()),
			fmt.Sprintf("%d%%", s.GetWeight()), strconv.Itoa(int(s.GetNewReplicas())), strconv.Itoa(int(s.GetOldReplicas())), s.GetMessage())
	}
	return t
}

func (e *env) rolloutStatusCmd() *cobra.Command {
	var out, environment string
	var watch bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "status APP [ROLLOUT_ID]",
		Short: "Show a rollout (default: the environment's active or latest one); --watch follows it to its end",
		Long: `Status shows a rollout's phase, steps and replicas. Without ROLLOUT_ID it
shows the environment's active rollout, or its latest one.

With --watch it follows the rollout until it ends: a live display on a
terminal, a line per change otherwise. The exit status is 0 when the rollout
succeeded and 1 when it was aborted, rolled back or failed.`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: e.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			app := args[0]
			id := ""
			if len(args) == 2 {
				id = args[1]
			}
			if id == "" {
				if id, err = latestRollout(cmd.Context(), cl, app, environment); err != nil {
					return err
				}
			}
			if watch {
				ctx, cancel := waitCtx(cmd.Context(), timeout)
				defer cancel()
				return e.followRollout(ctx, cl, e.stdout, app, id)
			}
			resp := &deployerv1.GetRolloutResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, appPath(app)+"/rollouts/"+url.PathEscape(id), nil, nil, resp); err != nil {
				return fmt.Errorf("get rollout %s of %s: %w", id, app, err)
			}
			r := resp.GetRollout()
			if out != "table" {
				return printObject(e.stdout, out, r, nil)
			}
			fmt.Fprintln(e.stdout, RolloutLine(r))
			if len(r.GetSteps()) > 0 {
				return RolloutTable(r).write(e.stdout)
			}
			return nil
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&environment, "env", "", "environment (default: the application's first)")
	c.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends; exit 1 unless it succeeded")
	c.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, give up after this long (0: no limit)")
	return c
}

// latestRollout is the environment's active rollout, else its latest.
func latestRollout(ctx context.Context, cl *client, app, environment string) (string, error) {
	resp := &deployerv1.GetApplicationResponse{}
	if err := cl.do(ctx, http.MethodGet, appPath(app), nil, nil, resp); err != nil {
		return "", fmt.Errorf("get application %s: %w", app, err)
	}
	envs := resp.GetApplication().GetEnvironments()
	for _, env := range envs {
		if environment != "" && env.GetName() != environment {
			continue
		}
		st := env.GetStatus()
		if id := st.GetActiveRolloutId(); id != "" {
			return id, nil
		}
		if id := st.GetLastRolloutId(); id != "" {
			return id, nil
		}
		return "", fmt.Errorf("application %s has no rollout in environment %s yet: start one with `opsuite app deploy %s`", app, env.GetName(), app)
	}
	if environment != "" {
		return "", fmt.Errorf("application %s has no environment %q", app, environment)
	}
	return "", fmt.Errorf("application %s has no rollout yet: start one with `opsuite app deploy %s`", app, app)
}

// RolloutOutcome is nil for a rollout that succeeded and an error saying
// how it ended otherwise.
func RolloutOutcome(r *deployerv1.Rollout) error {
	if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED {
		return nil
	}
	msg := fmt.Sprintf("rollout %s of %s ended %s", r.GetId(), r.GetApplication(), EnumName(r.GetPhase()))
	if r.GetReason() != "" {
		msg += " (" + r.GetReason() + ")"
	}
	if r.GetMessage() != "" {
		msg += ": " + r.GetMessage()
	}
	return errors.New(msg)
}

// followRollout shows a rollout until it is over and returns its outcome.
// A stream the server ends early is reopened.
func (e *env) followRollout(ctx context.Context, cl *client, w io.Writer, app, id string) error {
	view := newLiveView(w)
	var last *deployerv1.Rollout
	pausedNoted := false
	path := appPath(app) + "/rollouts/" + url.PathEscape(id) + ":watch"
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	failures := 0
	for {
		err := cl.stream(ctx, path, nil, func() proto.Message { return &deployerv1.WatchRolloutResponse{} }, func(m proto.Message) error {
			r := m.(*deployerv1.WatchRolloutResponse).GetRollout()
			if r == nil {
				return nil
			}
			last = r
			failures = 0
			view.show(RolloutFrame(r, time.Now()), RolloutLine(r))
			if r.GetPhase() == deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED && !pausedNoted && WaitsForPerson(r) {
				pausedNoted = true
				view.note(fmt.Sprintf("paused (%s): `opsuite rollout promote %s` goes on, `opsuite rollout abort %s` goes back", EnumName(r.GetPauseCause()), app, app))
			}
			if RolloutTerminal(r.GetPhase()) {
				return errStreamDone
			}
			return nil
		})
		if errors.Is(err, errStreamDone) {
			return RolloutOutcome(last)
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Code != codes.Unavailable && ae.Code != codes.Internal && ae.Code != codes.Unknown {
			return fmt.Errorf("watch rollout %s of %s: %w", id, app, err)
		}
		if ctx.Err() != nil {
			if last != nil {
				return fmt.Errorf("stopped watching rollout %s of %s while %s: %w", id, app, EnumName(last.GetPhase()), ctx.Err())
			}
			return fmt.Errorf("watch rollout %s of %s: %w", id, app, ctx.Err())
		}
		// The stream ended or broke: reopen it after a pause, a few times.
		failures++
		if failures > 30 {
			return fmt.Errorf("watch rollout %s of %s: %w", id, app, err)
		}
		select {
		case <-ctx.Done():
		case <-ticker.C:
		}
	}
}

// WaitsForPerson reports whether a paused rollout goes on only when someone
// promotes or aborts it (not a timed pause step).
func WaitsForPerson(r *deployerv1.Rollout) bool {
	if r.GetPhase() != deployerv1.RolloutPhase_ROLLOUT_PHASE_PAUSED {
		return false
	}
	if r.GetPauseCause() != deployerv1.PauseCause_PAUSE_CAUSE_STEP {
		return true
	}
	s := currentStep(r)
	return s != nil && s.GetKind() == deployerv1.StepKind_STEP_KIND_PAUSE && s.GetPauseDuration() == nil
}

// errStreamDone ends a stream once what it was followed for is over.
var errStreamDone = errors.New("stream done")

func (e *env) rolloutActionCmd(use, short, verb string, extra func(*cobra.Command), body func(app, environment, id string) proto.Message) *cobra.Command {
	var out, environment, id string
	c := &cobra.Command{
		Use:               use,
		Short:             short,
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
			app := args[0]
			resp := &deployerv1.WatchRolloutResponse{} // every action answers {"rollout": …}
			if err := cl.do(cmd.Context(), http.MethodPost, appPath(app)+":"+verb, nil, body(app, environment, id), resp); err != nil {
				return fmt.Errorf("%s %s: %w", verb, app, err)
			}
			if out != "table" {
				return printObject(e.stdout, out, resp.GetRollout(), nil)
			}
			_, err = fmt.Fprintln(e.stdout, RolloutLine(resp.GetRollout()))
			return err
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&environment, "env", "", "environment (default: the application's first)")
	if verb != "rollback" {
		c.Flags().StringVar(&id, "rollout", "", "refuse unless this is the active rollout")
	}
	if extra != nil {
		extra(c)
	}
	return c
}

func (e *env) rolloutPromoteCmd() *cobra.Command {
	var full bool
	return e.rolloutActionCmd("promote APP", "Advance the active rollout past its pause (--full: straight to 100%)", "promote",
		func(c *cobra.Command) {
			c.Flags().BoolVar(&full, "full", false, "go to 100% now, skipping the remaining steps and analysis")
		},
		func(app, environment, id string) proto.Message {
			return &deployerv1.PromoteRequest{Name: app, Environment: environment, RolloutId: id, Full: full}
		})
}

func (e *env) rolloutAbortCmd() *cobra.Command {
	var reason string
	return e.rolloutActionCmd("abort APP", "Abort the active rollout: all traffic back to the stable revision", "abort",
		func(c *cobra.Command) {
			c.Flags().StringVar(&reason, "reason", "", "recorded in the rollout's message")
		},
		func(app, environment, id string) proto.Message {
			return &deployerv1.AbortRequest{Name: app, Environment: environment, RolloutId: id, Reason: reason}
		})
}

func (e *env) rolloutRollbackCmd() *cobra.Command {
	var revision uint32
	var reason string
	return e.rolloutActionCmd("rollback APP", "Roll back to the last known-good revision (or --revision N)", "rollback",
		func(c *cobra.Command) {
			c.Flags().Uint32Var(&revision, "revision", 0, "kept revision to return to (default: the last known-good one)")
			c.Flags().StringVar(&reason, "reason", "", "recorded in the rollout's message")
		},
		func(app, environment, _ string) proto.Message {
			return &deployerv1.RollbackRequest{Name: app, Environment: environment, Revision: revision, Reason: reason}
		})
}
