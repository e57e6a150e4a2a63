package pipelinerunner

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// cronScheduler fires the cron schedules of every pipeline that is not
// paused. reload rebuilds the table after a pipeline changes.
type cronScheduler struct {
	s       *Service
	mu      sync.Mutex
	entries []cronEntry
	last    map[string]time.Time
	wake    chan struct{}
}

type cronEntry struct {
	pipeline string
	sched    pipelinefile.Cron
	schedule cron.Schedule
	next     time.Time
}

// cronReload is how often the schedules are read again.
const cronReload = 30 * time.Second

func newCronScheduler(s *Service) *cronScheduler {
	return &cronScheduler{s: s, last: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

func (c *cronScheduler) reload() {
	if c == nil {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *cronScheduler) load(ctx context.Context, now time.Time) {
	ps, err := c.s.store.Pipelines(ctx)
	if err != nil {
		c.s.log.Error("load cron schedules", "err", err)
		return
	}
	var entries []cronEntry
	for _, v := range ps {
		p := v.Value
		if p.GetPaused() {
			continue
		}
		parsed, err := pipelinefile.Parse([]byte(p.GetSource()))
		if err != nil {
			continue
		}
		for _, sc := range parsed.Cron {
			sched, err := pipelinefile.ParseCron(sc.Spec, sc.TimeZone)
			if err != nil {
				continue
			}
			entries = append(entries, cronEntry{pipeline: p.GetName(), sched: sc, schedule: sched, next: sched.Next(now)})
		}
	}
	c.mu.Lock()
	// An unchanged schedule keeps its next firing, even one already due.
	for i := range entries {
		for _, o := range c.entries {
			if o.pipeline == entries[i].pipeline && o.sched.Name == entries[i].sched.Name &&
				o.sched.Spec == entries[i].sched.Spec && o.sched.TimeZone == entries[i].sched.TimeZone {
				entries[i].next = o.next
			}
		}
	}
	c.entries = entries
	c.mu.Unlock()
}

func (c *cronScheduler) run(ctx context.Context) {
	c.load(ctx, time.Now())
	reload := time.NewTicker(cronReload)
	defer reload.Stop()
	for {
		c.mu.Lock()
		var wait time.Duration = time.Hour
		now := time.Now()
		for _, e := range c.entries {
			if d := e.next.Sub(now); d < wait {
				wait = d
			}
		}
		c.mu.Unlock()
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-reload.C:
			// Pick up pipelines changed through other runners.
			t.Stop()
			c.load(ctx, time.Now())
			continue
		case <-c.wake:
			t.Stop()
			c.load(ctx, time.Now())
			continue
		case <-t.C:
		}
		now = time.Now()
		var due []cronEntry
		c.mu.Lock()
		for i := range c.entries {
			e := &c.entries[i]
			if !e.next.After(now) {
				due = append(due, *e)
				c.last[e.pipeline+"/"+e.sched.Name] = e.next
				e.next = e.schedule.Next(now)
			}
		}
		c.mu.Unlock()
		for _, e := range due {
			c.fire(ctx, e)
		}
	}
}

func (c *cronScheduler) fire(ctx context.Context, e cronEntry) {
	// Another runner may have changed the pipeline since this one loaded
	// its schedules: fire only what is still scheduled.
	if !c.stillScheduled(ctx, e) {
		c.reload()
		return
	}
	// One run per firing, even with several runners on the same store.
	key := fmt.Sprintf("cron.%s.%s.%d", e.pipeline, cronKey(e.sched.Name), e.next.Unix())
	if _, fresh, err := c.s.store.Claim(ctx, key, []byte("1")); err != nil || !fresh {
		return
	}
	trig := triggerFromRef(pb.TriggerKind_TRIGGER_KIND_CRON, "cron", e.sched.Ref, "")
	trig.Schedule = e.sched.Name
	trig.Variables = e.sched.Variables
	if _, err := c.s.queueRun(ctx, e.pipeline, trig, e.sched.Variables, nil, 0); err != nil {
		c.s.log.Error("cron run", "pipeline", e.pipeline, "schedule", e.sched.Name, "err", err)
	}
}

// stillScheduled reports whether e's pipeline, unpaused, still has e's
// schedule as loaded.
func (c *cronScheduler) stillScheduled(ctx context.Context, e cronEntry) bool {
	pv, err := c.s.store.Pipeline(ctx, e.pipeline)
	if err != nil || pv.Value.GetPaused() {
		return false
	}
	parsed, err := pipelinefile.Parse([]byte(pv.Value.GetSource()))
	if err != nil {
		return false
	}
	for _, sc := range parsed.Cron {
		if sc.Name == e.sched.Name && sc.Spec == e.sched.Spec && sc.TimeZone == e.sched.TimeZone {
			return true
		}
	}
	return false
}

func cronKey(name string) string {
	out := []byte(name)
	for i, b := range out {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			out[i] = '_'
		}
	}
	return string(out)
}

// times returns a schedule's next and last firing.
func (c *cronScheduler) times(pipeline, name string, paused bool) (*timestamppb.Timestamp, *timestamppb.Timestamp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next, last *timestamppb.Timestamp
	if t, ok := c.last[pipeline+"/"+name]; ok {
		last = timestamppb.New(t)
	}
	if paused {
		return nil, last
	}
	for _, e := range c.entries {
		if e.pipeline == pipeline && e.sched.Name == name {
			next = timestamppb.New(e.next)
		}
	}
	return next, last
}
