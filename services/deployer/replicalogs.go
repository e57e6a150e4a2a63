package deployer

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/deployer/internal/driver"
	"google.golang.org/protobuf/proto"
)

// Replica output goes to the log-aggregator as NATS messages on
// opsuite.logs.apps.<app>.<env> (source "apps/<app>/<env>"), labelled with
// the application, environment, revision and replica. Publishing is to
// JetStream, so a batch counts as shipped only once the aggregator's stream
// holds it; without a log-aggregator (no stream) output stays with the
// runtime only (`docker logs`, the process driver's files).
const (
	logFollowInterval = 5 * time.Second
	logBatchLines     = 256
	logBatchWait      = 250 * time.Millisecond
)

// logFollowers tracks one follower per replica.
type logFollowers struct {
	mu   sync.Mutex
	byID map[string]context.CancelFunc
}

// followEnvLogs keeps a follower on every running replica of app/env until
// ctx ends: replicas that appear are followed, ones that are gone dropped.
func (s *Service) followEnvLogs(ctx context.Context, app, env string) {
	first := true
	for {
		for _, d := range s.drivers {
			reps, err := d.List(ctx, map[string]string{driver.LabelApp: app, driver.LabelEnvironment: env})
			if err != nil {
				continue
			}
			for _, r := range reps {
				if r.State == driver.StateRunning {
					since := time.Time{}
					if first {
						// Running before this deployer started: what it wrote
						// earlier was shipped by the previous one.
						since = time.Now()
					}
					s.followReplica(ctx, d, r, since)
				}
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(logFollowInterval):
		}
	}
}

// followReplica starts shipping a replica's output unless it is shipped
// already. The follower ends when the replica stops or ctx ends.
func (s *Service) followReplica(ctx context.Context, d driver.Driver, r driver.Replica, since time.Time) {
	s.logs.mu.Lock()
	if s.logs.byID == nil {
		s.logs.byID = map[string]context.CancelFunc{}
	}
	if _, ok := s.logs.byID[r.ID]; ok {
		s.logs.mu.Unlock()
		return
	}
	fctx, cancel := context.WithCancel(ctx)
	s.logs.byID[r.ID] = cancel
	s.logs.mu.Unlock()
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		defer func() {
			s.logs.mu.Lock()
			delete(s.logs.byID, r.ID)
			s.logs.mu.Unlock()
			cancel()
		}()
		s.shipReplicaLogs(fctx, d, r, since)
	}()
}

// unfollowReplica stops shipping a stopped replica's output.
func (s *Service) unfollowReplica(id string) {
	s.logs.mu.Lock()
	cancel := s.logs.byID[id]
	s.logs.mu.Unlock()
	if cancel != nil {
		// Let the last lines (a shutdown message) through first.
		time.AfterFunc(time.Second, cancel)
	}
}

func (s *Service) shipReplicaLogs(ctx context.Context, d driver.Driver, r driver.Replica, since time.Time) {
	subject := fmt.Sprintf("opsuite.logs.apps.%s.%s", r.App, r.Environment)
	stream := &lav1.LogStream{
		Source: "apps/" + r.App + "/" + r.Environment,
		Labels: map[string]string{"app": r.App, "environment": r.Environment, "revision": fmt.Sprint(r.Revision), "replica": r.ID},
	}
	lines := make(chan *lav1.LogEntry, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.publishLogBatches(ctx, subject, stream, r.ID, lines)
	}()
	w := &entryWriter{out: lines, ctx: ctx}
	if err := d.Logs(ctx, r.ID, driver.LogOptions{Follow: true, Since: since}, w); err != nil && ctx.Err() == nil {
		s.log.Debug("replica output no longer followed", "replica", r.ID, "err", err)
	}
	close(lines)
	<-done
}

// publishLogBatches sends entries in batches: every logBatchLines lines or
// logBatchWait, whichever comes first.
func (s *Service) publishLogBatches(ctx context.Context, subject string, stream *lav1.LogStream, replica string, lines <-chan *lav1.LogEntry) {
	seq := 0
	base := time.Now().UnixNano()
	var batch []*lav1.LogEntry
	flush := func() {
		if len(batch) == 0 {
			return
		}
		seq++
		b := &lav1.LogBatch{
			Streams: []*lav1.LogStream{{Source: stream.GetSource(), Labels: stream.GetLabels(), Entries: batch}},
			BatchId: fmt.Sprintf("%s-%d-%d", replica, base, seq),
		}
		batch = nil
		data, err := proto.Marshal(b)
		if err != nil {
			return
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := s.js.Publish(pctx, subject, data, jetstream.WithMsgID(b.GetBatchId())); err != nil {
			s.log.Debug("replica output not shipped (is the log-aggregator running?)", "replica", replica, "lines", len(b.GetStreams()[0].GetEntries()), "err", err)
		}
	}
	tick := time.NewTicker(logBatchWait)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-lines:
			if !ok {
				flush()
				return
			}
			batch = append(batch, e)
			if len(batch) >= logBatchLines {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// entryWriter turns the driver's lines into log entries.
type entryWriter struct {
	out chan<- *lav1.LogEntry
	ctx context.Context //nolint:containedctx // bounded to the follower's life
}

func (w *entryWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	e := &lav1.LogEntry{TimeUnixNano: time.Now().UnixNano(), Level: guessLevel(line), Message: line}
	select {
	case w.out <- e:
		return len(p), nil
	case <-w.ctx.Done():
		return 0, w.ctx.Err()
	}
}

var (
	errorWords = regexp.MustCompile(`(?i)\b(level=error|level=fatal|error|fatal|panic|exception)\b`)
	warnWords  = regexp.MustCompile(`(?i)\b(level=warn(ing)?|warn(ing)?)\b`)
)

// guessLevel reads a level from raw output: words such as "error" or
// "level=warn"; none means unspecified, as raw output has no level.
func guessLevel(line string) lav1.LogLevel {
	switch {
	case errorWords.MatchString(line):
		return lav1.LogLevel_LOG_LEVEL_ERROR
	case warnWords.MatchString(line):
		return lav1.LogLevel_LOG_LEVEL_WARN
	}
	return lav1.LogLevel_LOG_LEVEL_UNSPECIFIED
}
