package monitor

import (
	"log/slog"
	"os"
	"testing"

	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
)

// FuzzParseRuleFile feeds the rule loader arbitrary YAML: it must return
// groups or a validation error, never panic.
func FuzzParseRuleFile(f *testing.F) {
	for _, p := range []string{"testdata/node.rules.yml", "testdata/bad.rules.yml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels: {__x: y}\n"))
	f.Add([]byte("groups: [{name: g, interval: 0s, rules: [{record: 'a:b', expr: 'sum(x)', for: 1m}]}]"))
	db, err := tsstore.Open(tsstore.Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = db.Close() })
	s, err := New(Config{DataDir: "unused"}, Deps{JetStream: nil, Events: nil})
	if err == nil || s != nil {
		f.Fatal("New without JetStream must fail")
	}
	s = &Service{cfg: Config{DefaultEvalInterval: 15e9, MinEvalInterval: 1e9}, log: slog.New(slog.DiscardHandler), db: db}
	f.Fuzz(func(t *testing.T, content []byte) {
		groups, err := s.parseRuleFile("f.yml", content)
		if err == nil {
			for _, g := range groups {
				if _, _, err := s.compileGroup("g", g); err != nil {
					t.Fatalf("loaded group does not compile: %v", err)
				}
			}
		}
	})
}
