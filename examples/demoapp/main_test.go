package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandler(t *testing.T) {
	cases := []struct {
		name            string
		unhealthy, fail bool
		path            string
		wantCode        int
		wantBody        string
	}{
		{"version", false, false, "/", 200, "v7"},
		{"healthy", false, false, "/healthz", 200, "ok\n"},
		{"unhealthy on purpose", true, false, "/healthz", 503, "unhealthy on purpose\n"},
		{"failing on purpose", false, true, "/", 500, "failing on purpose\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			handler("v7", tc.unhealthy, tc.fail).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.wantCode || rec.Body.String() != tc.wantBody {
				t.Fatalf("GET %s = %d %q, want %d %q", tc.path, rec.Code, rec.Body.String(), tc.wantCode, tc.wantBody)
			}
		})
	}
}
