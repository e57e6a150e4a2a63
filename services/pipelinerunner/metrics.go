package pipelinerunner

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	runsFinished  *prometheus.CounterVec
	stepsFinished *prometheus.CounterVec
	logLines      prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsuite_pipelinerunner_runs_finished_total", Help: "Runs that reached a final state, by state.",
		}, []string{"state"}),
		stepsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsuite_pipelinerunner_steps_finished_total", Help: "Run steps that reached a final state, by state.",
		}, []string{"state"}),
		logLines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsuite_pipelinerunner_log_lines_total", Help: "Output lines stored.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.runsFinished, m.stepsFinished, m.logLines} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func stateLabel(s string) string {
	if i := strings.LastIndexByte(s, '_'); i >= 0 {
		return strings.ToLower(s[i+1:])
	}
	return strings.ToLower(s)
}
