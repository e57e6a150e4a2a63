package readiness_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opsuite/opsuite/pkg/readiness"
)

func TestReadyzFollowsComponents(t *testing.T) {
	r := readiness.New()
	mux := http.NewServeMux()
	r.Register(mux)
	get := func(path string) (int, readiness.Report) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var rep readiness.Report
		if path == "/readyz" {
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
				t.Fatalf("readyz body %q: %v", rec.Body, err)
			}
		}
		return rec.Code, rep
	}
	if code, rep := get("/readyz"); code != http.StatusServiceUnavailable || rep.Ready {
		t.Fatalf("nothing registered: %d %+v, want 503", code, rep)
	}
	r.Add("b")
	r.Add("a")
	r.Set("a", true)
	code, rep := get("/readyz")
	if code != http.StatusServiceUnavailable || len(rep.Components) != 2 || rep.Components[0].Name != "a" || !rep.Components[0].Ready || rep.Components[1].Ready {
		t.Fatalf("one ready: %d %+v", code, rep)
	}
	r.Set("b", true)
	if code, rep := get("/readyz"); code != http.StatusOK || !rep.Ready {
		t.Fatalf("all ready: %d %+v", code, rep)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
}
