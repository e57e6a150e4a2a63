package suite

import (
	"strings"
	"testing"
)

func TestValidateStoreReplicas(t *testing.T) {
	tests := []struct {
		name     string
		replicas int
		natsURL  string
		want     int
		err      string
	}{
		{name: "default is one", replicas: 0, want: 1},
		{name: "one embedded", replicas: 1, want: 1},
		{name: "three on a cluster", replicas: 3, natsURL: "nats://127.0.0.1:4222", want: 3},
		{name: "five on a cluster", replicas: 5, natsURL: "nats://127.0.0.1:4222", want: 5},
		{name: "even count", replicas: 2, natsURL: "nats://127.0.0.1:4222", err: "use 1, 3 or 5"},
		{name: "negative", replicas: -1, err: "use 1, 3 or 5"},
		{name: "three on the embedded server", replicas: 3, err: "needs a clustered NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{DataDir: t.TempDir(), NATSURL: tt.natsURL, StoreReplicas: tt.replicas,
				GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthCheckerAddr: "127.0.0.1:1"}
			err := cfg.Validate()
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Validate() = %v, want an error with %q", err, tt.err)
				}
			case err != nil:
				t.Fatalf("Validate() = %v", err)
			case cfg.StoreReplicas != tt.want:
				t.Fatalf("StoreReplicas = %d, want %d", cfg.StoreReplicas, tt.want)
			}
		})
	}
}
