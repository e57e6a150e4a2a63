// Package webhook delivers alert notifications to HTTP endpoints in the
// Alertmanager webhook format (version "4"), with retries and exponential
// backoff.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Alert is one alert of a payload, as Alertmanager sends it.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Payload is the body of one webhook call.
type Payload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Target is where and how to post.
type Target struct {
	URL         string
	Headers     map[string]string
	BearerToken string
	HMACSecret  string
	Timeout     time.Duration
}

// Result is what one attempt got.
type Result struct {
	Status   int
	Duration time.Duration
	Err      error
}

// Send posts p once.
func Send(ctx context.Context, c *http.Client, t Target, p *Payload) Result {
	body, err := json.Marshal(p)
	if err != nil {
		return Result{Err: fmt.Errorf("encode payload: %w", err)}
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "opsuite-monitor")
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	if t.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+t.BearerToken)
	}
	if t.HMACSecret != "" {
		m := hmac.New(sha256.New, []byte(t.HMACSecret))
		m.Write(body)
		req.Header.Set("X-Opsuite-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	start := time.Now()
	resp, err := c.Do(req)
	d := time.Since(start)
	if err != nil {
		return Result{Duration: d, Err: fmt.Errorf("post %s: %w", t.URL, err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return Result{Status: resp.StatusCode, Duration: d, Err: fmt.Errorf("post %s: answered %s", t.URL, resp.Status)}
	}
	return Result{Status: resp.StatusCode, Duration: d}
}

// Backoff is an exponential retry schedule.
type Backoff struct {
	Initial, Max time.Duration
}

// Delay is the wait before retry n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	for range n {
		d *= 2
		if d >= b.Max {
			return b.Max
		}
	}
	return min(d, b.Max)
}

// Deliver posts p until it succeeds, retryFor has passed or ctx ends,
// waiting by b between attempts. report is told of every attempt.
func Deliver(ctx context.Context, c *http.Client, t Target, p *Payload, b Backoff, retryFor time.Duration, report func(Result)) error {
	deadline := time.Now().Add(retryFor)
	for n := 0; ; n++ {
		r := Send(ctx, c, t, p)
		if report != nil {
			report(r)
		}
		if r.Err == nil {
			return nil
		}
		// A 4xx other than 408/429 will not change with retries.
		if r.Status >= 400 && r.Status < 500 && r.Status != http.StatusRequestTimeout && r.Status != http.StatusTooManyRequests {
			return r.Err
		}
		wait := b.Delay(n)
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("gave up after %d attempts: %w", n+1, r.Err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
