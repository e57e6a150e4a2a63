package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
)

// isTerminal reports whether w is a character device (a terminal), where
// progress is redrawn in place rather than printed a line per change.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// liveView shows a changing state: redrawn in place on a terminal, a line
// per change otherwise.
type liveView struct {
	w        io.Writer
	terminal bool
	drawn    int    // lines of the last frame on a terminal
	last     string // last line printed when piped
}

func newLiveView(w io.Writer) *liveView { return &liveView{w: w, terminal: isTerminal(w)} }

// frame shows lines (terminal) or line (piped, printed only when it differs
// from the previous one).
func (v *liveView) show(frame []string, line string) {
	if v.terminal {
		var b strings.Builder
		if v.drawn > 0 {
			fmt.Fprintf(&b, "\x1b[%dA\r\x1b[J", v.drawn)
		}
		for _, l := range frame {
			b.WriteString(l)
			b.WriteString("\n")
		}
		_, _ = io.WriteString(v.w, b.String())
		v.drawn = len(frame)
		return
	}
	if line != v.last {
		_, _ = fmt.Fprintln(v.w, line)
		v.last = line
	}
}

// note prints a line that stays, above the live frame on a terminal.
func (v *liveView) note(line string) {
	if v.terminal && v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\r\x1b[J", v.drawn)
		v.drawn = 0
	}
	_, _ = fmt.Fprintln(v.w, line)
}

// RolloutTerminal reports whether a rollout phase is final.
func RolloutTerminal(p deployerv1.RolloutPhase) bool {
	switch p {
	case deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED, deployerv1.RolloutPhase_ROLLOUT_PHASE_ABORTED,
		deployerv1.RolloutPhase_ROLLOUT_PHASE_ROLLED_BACK, deployerv1.RolloutPhase_ROLLOUT_PHASE_FAILED:
		return true
	}
	return false
}

// stepsDone counts steps that are over (succeeded, failed or skipped).
func stepsDone(r *deployerv1.Rollout) int {
	n := 0
	for _, s := range r.GetSteps() {
		switch s.GetState() {
		case deployerv1.StepState_STEP_STATE_SUCCEEDED, deployerv1.StepState_STEP_STATE_FAILED, deployerv1.StepState_STEP_STATE_SKIPPED:
			n++
		}
	}
	return n
}

func currentStep(r *deployerv1.Rollout) *deployerv1.RolloutStep {
	i := int(r.GetCurrentStepIndex())
	if i >= 0 && i < len(r.GetSteps()) {
		return r.GetSteps()[i]
	}
	return nil
}

// RolloutLine is the one-line summary printed for each change of a rollout
// when output is not a terminal.
func RolloutLine(r *deployerv1.Rollout) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", r.GetApplication(), r.GetId(), EnumName(r.GetPhase()))
	if n := len(r.GetSteps()); n > 0 && !RolloutTerminal(r.GetPhase()) {
		idx := int(r.GetCurrentStepIndex())
		if s := currentStep(r); s != nil {
			fmt.Fprintf(&b, " step %d/%d %s", idx+1, n, s.GetDescription())
		} else {
			fmt.Fprintf(&b, " steps %d/%d done", stepsDone(r), n)
		}
	}
	if !RolloutTerminal(r.GetPhase()) {
		fmt.Fprintf(&b, " weight=%d%% new=%d/%d", r.GetCanaryWeight(), r.GetUpdatedReplicas(), r.GetDesiredReplicas())
		if r.GetOldReplicas() > 0 {
			fmt.Fprintf(&b, " old=%d", r.GetOldReplicas())
		}
	} else {
		fmt.Fprintf(&b, " revision %d → %d", r.GetFromRevision(), r.GetToRevision())
	}
	if r.GetReason() != "" {
		fmt.Fprintf(&b, " reason=%s", r.GetReason())
	}
	if r.GetMessage() != "" {
		fmt.Fprintf(&b, " — %s", r.GetMessage())
	}
	return b.String()
}

// bar draws a progress bar of width cells for done out of total.
func bar(done, total, width int) string {
	if total <= 0 {
		total, done = 1, 0
	}
	done = max(0, min(done, total))
	full := done * width / total
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", width-full) + "]"
}

var stepMarks = map[deployerv1.StepState]string{
	deployerv1.StepState_STEP_STATE_PENDING:   "·",
	deployerv1.StepState_STEP_STATE_RUNNING:   "▶",
	deployerv1.StepState_STEP_STATE_SUCCEEDED: "✓",
	deployerv1.StepState_STEP_STATE_FAILED:    "✗",
	deployerv1.StepState_STEP_STATE_SKIPPED:   "−",
}

// RolloutFrame is the terminal display of a rollout.
func RolloutFrame(r *deployerv1.Rollout, now time.Time) []string {
	elapsed := ""
	if st := r.GetStartTime(); st.IsValid() && st.GetSeconds() != 0 {
		end := now
		if et := r.GetEndTime(); et.IsValid() && et.GetSeconds() != 0 {
			end = et.AsTime()
		}
		elapsed = "  " + ShortDuration(end.Sub(st.AsTime()))
	}
	lines := []string{
		fmt.Sprintf("%s/%s  rollout %s  revision %d → %d", r.GetApplication(), r.GetEnvironment(), r.GetId(), r.GetFromRevision(), r.GetToRevision()),
		fmt.Sprintf("%s %d/%d steps  %s  weight %d%%%s", bar(stepsDone(r), len(r.GetSteps()), 24), stepsDone(r), len(r.GetSteps()),
			strings.ToUpper(EnumName(r.GetPhase())), r.GetCanaryWeight(), elapsed),
	}
	for _, s := range r.GetSteps() {
		mark := stepMarks[s.GetState()]
		if mark == "" {
			mark = " "
		}
		l := fmt.Sprintf("  %s %s", mark, s.GetDescription())
		if s.GetMessage() != "" {
			l += "  (" + ellipsis(s.GetMessage(), 80) + ")"
		}
		lines = append(lines, l)
	}
	lines = append(lines, fmt.Sprintf("  replicas: %d/%d new (%d ready), %d old   requests: %d (%d failed)",
		r.GetUpdatedReplicas(), r.GetDesiredReplicas(), r.GetReadyReplicas(), r.GetOldReplicas(), r.GetTotalRequests(), r.GetFailedRequests()))
	if r.GetMessage() != "" {
		lines = append(lines, "  "+ellipsis(r.GetMessage(), 160))
	}
	return lines
}

// RunTerminal reports whether a run state is final.
func RunTerminal(s prv1.RunState) bool {
	switch s {
	case prv1.RunState_RUN_STATE_SUCCESS, prv1.RunState_RUN_STATE_FAILED, prv1.RunState_RUN_STATE_CANCELLED, prv1.RunState_RUN_STATE_SKIPPED:
		return true
	}
	return false
}

func runStepsDone(r *prv1.Run) int {
	n := 0
	for _, s := range r.GetSteps() {
		switch s.GetState() {
		case prv1.StepState_STEP_STATE_SUCCESS, prv1.StepState_STEP_STATE_FAILED, prv1.StepState_STEP_STATE_CANCELLED, prv1.StepState_STEP_STATE_SKIPPED:
			n++
		}
	}
	return n
}

// RunLine is the one-line summary of a run, printed per change when not on
// a terminal; changed names the step that changed, if any.
func RunLine(r *prv1.Run, changed string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s #%d %s: %s", r.GetPipeline(), r.GetNumber(), r.GetId(), EnumName(r.GetState()))
	fmt.Fprintf(&b, " steps %d/%d done", runStepsDone(r), len(r.GetSteps()))
	if changed != "" {
		for _, s := range r.GetSteps() {
			if s.GetId() == changed {
				fmt.Fprintf(&b, "; step %s %s", s.GetId(), EnumName(s.GetState()))
				if s.GetMessage() != "" {
					fmt.Fprintf(&b, " (%s)", s.GetMessage())
				}
			}
		}
	}
	if RunTerminal(r.GetState()) && r.GetMessage() != "" {
		fmt.Fprintf(&b, " — %s", r.GetMessage())
	}
	return b.String()
}

var runMarks = map[prv1.StepState]string{
	prv1.StepState_STEP_STATE_PENDING:   "·",
	prv1.StepState_STEP_STATE_RUNNING:   "▶",
	prv1.StepState_STEP_STATE_SUCCESS:   "✓",
	prv1.StepState_STEP_STATE_FAILED:    "✗",
	prv1.StepState_STEP_STATE_CANCELLED: "⊘",
	prv1.StepState_STEP_STATE_SKIPPED:   "−",
}

// RunFrame is the terminal display of a pipeline run.
func RunFrame(r *prv1.Run, now time.Time) []string {
	elapsed := ""
	if st := r.GetStartTime(); st.IsValid() && st.GetSeconds() != 0 {
		end := now
		if et := r.GetEndTime(); et.IsValid() && et.GetSeconds() != 0 {
			end = et.AsTime()
		}
		elapsed = "  " + ShortDuration(end.Sub(st.AsTime()))
	}
	lines := []string{
		fmt.Sprintf("%s #%d  run %s", r.GetPipeline(), r.GetNumber(), r.GetId()),
		fmt.Sprintf("%s %d/%d steps  %s%s", bar(runStepsDone(r), len(r.GetSteps()), 24), runStepsDone(r), len(r.GetSteps()),
			strings.ToUpper(EnumName(r.GetState())), elapsed),
	}
	for _, s := range r.GetSteps() {
		mark := runMarks[s.GetState()]
		if mark == "" {
			mark = " "
		}
		l := fmt.Sprintf("  %s %s", mark, s.GetId())
		if st := s.GetStartTime(); st.IsValid() && st.GetSeconds() != 0 {
			end := now
			if et := s.GetEndTime(); et.IsValid() && et.GetSeconds() != 0 {
				end = et.AsTime()
			}
			l += "  " + ShortDuration(end.Sub(st.AsTime()))
		}
		if s.GetMessage() != "" {
			l += "  (" + ellipsis(s.GetMessage(), 80) + ")"
		}
		lines = append(lines, l)
	}
	if r.GetMessage() != "" {
		lines = append(lines, "  "+ellipsis(r.GetMessage(), 160))
	}
	return lines
}
