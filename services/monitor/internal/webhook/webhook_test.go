package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		if got := b.Delay(n); got != want*time.Millisecond {
			t.Errorf("Delay(%d) = %s, want %s", n, got, want*time.Millisecond)
		}
	}
}

func TestSendSignsAndClassifies(t *testing.T) {
	status := http.StatusBadGateway
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("k"))
		m.Write(body)
		if r.Header.Get("X-Opsuite-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) || r.Header.Get("Authorization") != "Bearer tok" ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Team") != "ops" {
			t.Errorf("headers %v", r.Header)
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	tgt := Target{URL: srv.URL, HMACSecret: "k", BearerToken: "tok", Headers: map[string]string{"X-Team": "ops"}}
	for _, c := range []struct {
		status    int
		ok, final bool
	}{
		{http.StatusOK, true, false},
		{http.StatusNoContent, true, false},
		{http.StatusBadGateway, false, false},
		{http.StatusServiceUnavailable, false, false},
		{http.StatusTooManyRequests, false, false},
		{http.StatusRequestTimeout, false, false},
		{http.StatusNotFound, false, true},
		{http.StatusBadRequest, false, true},
	} {
		status = c.status
		r := Send(context.Background(), srv.Client(), tgt, &Payload{Version: "4", Receiver: "ops"})
		if (r.Err == nil) != c.ok || r.Status != c.status || Permanent(r) != c.final {
			t.Errorf("answer %d: err %v, status %d, permanent %v; want ok %v, permanent %v", c.status, r.Err, r.Status, Permanent(r), c.ok, c.final)
		}
	}
	srv.Close()
	if r := Send(context.Background(), http.DefaultClient, Target{URL: srv.URL, Timeout: time.Second}, &Payload{}); r.Err == nil || Permanent(r) {
		t.Fatalf("closed server: %v, permanent %v; want a retryable error", r.Err, Permanent(r))
	}
}
