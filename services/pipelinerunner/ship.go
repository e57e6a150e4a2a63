package pipelinerunner

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/protobuf/proto"
)

// shipBatch is the most lines shipped in one batch.
const shipBatch = 500

// shipper sends a run's (already masked) output to the log-aggregator over
// NATS (opsuite.logs.pipeline.<pipeline>.<number>), batched per step, when
// a stream takes those subjects; without one it does nothing.
type shipper struct {
	s       *Service
	run     *pb.Run
	mu      sync.Mutex
	pending map[string][]*pb.LogLine
}

func newShipper(s *Service, run *pb.Run) *shipper {
	return &shipper{s: s, run: run, pending: map[string][]*pb.LogLine{}}
}

func (sh *shipper) add(l *pb.LogLine) {
	sh.mu.Lock()
	sh.pending[l.GetStep()] = append(sh.pending[l.GetStep()], l)
	full := len(sh.pending[l.GetStep()]) >= shipBatch
	sh.mu.Unlock()
	if full {
		sh.flush(l.GetStep())
	}
}

// flush ships the lines of one step ("" is the run's own lines).
func (sh *shipper) flush(step string) {
	sh.mu.Lock()
	lines := sh.pending[step]
	delete(sh.pending, step)
	sh.mu.Unlock()
	if len(lines) == 0 || !sh.s.logsWanted() {
		return
	}
	source := fmt.Sprintf("pipeline/%s/%d", sh.run.GetPipeline(), sh.run.GetNumber())
	labels := map[string]string{"pipeline": sh.run.GetPipeline(), "run": sh.run.GetId()}
	if step != "" {
		source += "/" + step
		labels["step"] = step
	}
	stream := &lav1.LogStream{Source: source, Labels: labels}
	for _, l := range lines {
		level := lav1.LogLevel_LOG_LEVEL_UNSPECIFIED
		switch l.GetStream() {
		case pb.LogStream_LOG_STREAM_SYSTEM:
			level = lav1.LogLevel_LOG_LEVEL_INFO
		case pb.LogStream_LOG_STREAM_STDERR:
			level = lav1.LogLevel_LOG_LEVEL_WARN
		}
		stream.Entries = append(stream.Entries, &lav1.LogEntry{
			TimeUnixNano: l.GetTime().AsTime().UnixNano(), Level: level, Message: l.GetText(), Truncated: l.GetPartial(),
			Metadata: map[string]string{"seq": fmt.Sprint(l.GetSeq()), "attempt": fmt.Sprint(l.GetAttempt())},
		})
	}
	id := fmt.Sprintf("%s.%s.%d", sh.run.GetId(), subjectToken(step), lines[0].GetSeq())
	data, err := proto.Marshal(&lav1.LogBatch{Streams: []*lav1.LogStream{stream}, BatchId: id})
	if err != nil {
		return
	}
	subject := fmt.Sprintf("opsuite.logs.pipeline.%s.%d", subjectToken(sh.run.GetPipeline()), sh.run.GetNumber())
	if step != "" {
		subject += "." + subjectToken(step)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{"content-type": {"application/protobuf"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sh.s.deps.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		sh.s.log.Debug("ship pipeline output", "run", sh.run.GetId(), "err", err)
	}
}

func (sh *shipper) flushAll() {
	sh.mu.Lock()
	steps := make([]string, 0, len(sh.pending))
	for k := range sh.pending {
		steps = append(steps, k)
	}
	sh.mu.Unlock()
	for _, st := range steps {
		sh.flush(st)
	}
}

// subjectToken makes a name one NATS subject token.
func subjectToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// logsWanted reports whether a stream takes opsuite.logs.pipeline.>,
// checked at most every 30 s.
func (s *Service) logsWanted() bool {
	s.shipMu.Lock()
	defer s.shipMu.Unlock()
	if time.Since(s.shipChecked) < 30*time.Second {
		return s.shipOK
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.deps.JetStream.StreamNameBySubject(ctx, "opsuite.logs.pipeline.x")
	s.shipOK, s.shipChecked = err == nil, time.Now()
	return s.shipOK
}
