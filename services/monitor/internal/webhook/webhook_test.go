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

func TestDeliverSignsRetriesAndGivesUp(t *testing.T) {
	var attempts int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("k"))
		m.Write(body)
		if r.Header.Get("X-Opsuite-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) || r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("headers %v", r.Header)
		}
		attempts++
		if attempts < 3 {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	tgt := Target{URL: srv.URL, HMACSecret: "k", BearerToken: "tok"}
	b := Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	if err := Deliver(context.Background(), srv.Client(), tgt, &Payload{Version: "4"}, b, time.Second, nil); err != nil || attempts != 3 {
		t.Fatalf("deliver: %v after %d attempts", err, attempts)
	}

	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	defer gone.Close()
	var reports int
	err := Deliver(context.Background(), gone.Client(), Target{URL: gone.URL}, &Payload{}, b, time.Second, func(Result) { reports++ })
	if err == nil || reports != 1 {
		t.Fatalf("404 should fail at once: %v after %d attempts", err, reports)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer down.Close()
	start := time.Now()
	if err := Deliver(context.Background(), down.Client(), Target{URL: down.URL}, &Payload{}, b, 50*time.Millisecond, nil); err == nil || time.Since(start) > time.Second {
		t.Fatalf("retry_for not honoured: %v after %s", err, time.Since(start))
	}
}
