// Package webhook posts alert notifications to HTTP endpoints in the
// Alertmanager webhook format (version "4"): one attempt at a time, with the
// retry schedule (Backoff) and the verdict on retrying (Permanent) for the
// caller, which keeps the notification durably between attempts.
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

// Encode renders p as the body of a call.
func Encode(p *Payload) ([]byte, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return body, nil
}

// Send posts p once.
func Send(ctx context.Context, c *http.Client, t Target, p *Payload) Result {
	body, err := Encode(p)
	if err != nil {
		return Result{Err: err}
	}
	return Post(ctx, c, t, body)
}

// Post posts an encoded payload once, signed when the target has a secret.
func Post(ctx context.Context, c *http.Client, t Target, body []byte) Result {
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

// Permanent reports whether a failed attempt will fail the same way when
// retried: a 4xx answer other than 408 and 429.
func Permanent(r Result) bool {
	return r.Err != nil && r.Status >= 400 && r.Status < 500 && r.Status != http.StatusRequestTimeout && r.Status != http.StatusTooManyRequests
}
