package healthload

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// bareLoop is the baseline: what a minimal net/http checker costs. One
// goroutine and timer per target, one shared transport configured like the
// service's, the same schedule arithmetic (first check at a random point of
// the first interval, then every interval, missed slots skipped) and the
// same lag definition (check start minus its slot), and nothing else: no
// result, state, history, metrics or concurrency bound.
type bareLoop struct {
	transport *http.Transport
	client    *http.Client
	interval  time.Duration
	timeout   time.Duration
	lag       func(time.Duration)

	failed   atomic.Int64
	firstErr atomic.Pointer[string] // the first failure, to say why
	loops    sync.WaitGroup
}

func newBareLoop(interval, timeout time.Duration, lag func(time.Duration)) *bareLoop {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &bareLoop{
		transport: tr,
		client:    &http.Client{Transport: tr},
		interval:  interval,
		timeout:   timeout,
		lag:       lag,
	}
}

// start checks every URL until ctx ends; wait returns when all loops have.
func (l *bareLoop) start(ctx context.Context, urls []string) {
	for _, u := range urls {
		l.loops.Add(1)
		go func() {
			defer l.loops.Done()
			l.run(ctx, u)
		}()
	}
}

func (l *bareLoop) wait() {
	l.loops.Wait()
	l.transport.CloseIdleConnections()
}

func (l *bareLoop) run(ctx context.Context, url string) {
	next := time.Now().Add(time.Duration(rand.Int64N(int64(l.interval))))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		l.lag(time.Since(next))
		if err := l.check(ctx, url); err != nil && ctx.Err() == nil {
			l.failed.Add(1)
			msg := err.Error()
			l.firstErr.CompareAndSwap(nil, &msg)
		}
		next = next.Add(l.interval)
		if now := time.Now(); next.Before(now) {
			next = next.Add((now.Sub(next)/l.interval + 1) * l.interval)
		}
		timer.Reset(time.Until(next))
	}
}

func (l *bareLoop) check(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}
