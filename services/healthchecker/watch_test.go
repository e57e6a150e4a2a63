package healthchecker

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
)

func testTransition(group, name string) *hcv1.TargetTransition {
	return &hcv1.TargetTransition{Group: group, Name: name, PreviousState: statePending, State: statePassing}
}

// mustSubscribe registers a watcher that the test unsubscribes when it ends.
func mustSubscribe(tb testing.TB, h *hub, group string, names ...string) *watcher {
	tb.Helper()
	w := h.subscribe(group, names)
	tb.Cleanup(func() { h.unsubscribe(w) })
	return w
}

// drainWatcher drains what w has buffered, as "group/name" strings.
func drainWatcher(w *watcher) []string {
	var got []string
	for {
		select {
		case tr := <-w.ch:
			got = append(got, tr.GetGroup()+"/"+tr.GetName())
		default:
			return got
		}
	}
}

func TestHubFanOut(t *testing.T) {
	published := []*hcv1.TargetTransition{
		testTransition("shop", "web"),
		testTransition("shop", "db"),
		testTransition("billing", "web"),
		testTransition("", "dns"),
	}
	tests := []struct {
		name  string
		group string
		names []string
		want  []string
	}{
		{name: "everything", want: []string{"shop/web", "shop/db", "billing/web", "/dns"}},
		{name: "one group", group: "shop", want: []string{"shop/web", "shop/db"}},
		{name: "names in any group", names: []string{"web"}, want: []string{"shop/web", "billing/web"}},
		{name: "group and names", group: "billing", names: []string{"web", "db"}, want: []string{"billing/web"}},
		{name: "several names", names: []string{"db", "dns"}, want: []string{"shop/db", "/dns"}},
		{name: "unknown group", group: "nope", want: nil},
		{name: "unknown name", names: []string{"nope"}, want: nil},
	}
	h := newHub()
	watchers := make([]*watcher, len(tests))
	for i, tt := range tests {
		watchers[i] = mustSubscribe(t, h, tt.group, tt.names...)
	}
	for _, tr := range published {
		h.publish(tr)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := watchers[i]
			if got := drainWatcher(w); !slices.Equal(got, tt.want) {
				t.Errorf("received %q, want %q", got, tt.want)
			}
			select {
			case <-w.dropped:
				t.Error("watcher was dropped")
			default:
			}
		})
	}
}

func TestHubUnsubscribe(t *testing.T) {
	h := newHub()
	gone := h.subscribe("", nil)
	stays := mustSubscribe(t, h, "")
	h.unsubscribe(gone)
	h.unsubscribe(gone) // twice is harmless
	h.publish(testTransition("", "web"))
	if got := drainWatcher(gone); len(got) != 0 {
		t.Errorf("unsubscribed watcher received %q", got)
	}
	if got := drainWatcher(stays); !slices.Equal(got, []string{"/web"}) {
		t.Errorf("subscribed watcher received %q", got)
	}
}

func TestHubDropsSlowWatcher(t *testing.T) {
	h := newHub()
	slow := mustSubscribe(t, h, "")
	fast := mustSubscribe(t, h, "")
	other := mustSubscribe(t, h, "other") // full of nothing: never dropped

	publish := func(n int, from int) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range n {
				h.publish(testTransition("", fmt.Sprintf("t%d", from+i)))
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("publish blocked on a slow watcher")
		}
	}

	// Fill both buffers exactly; nobody is dropped yet.
	publish(watchBuffer, 0)
	if got := len(drainWatcher(fast)); got != watchBuffer {
		t.Fatalf("fast watcher received %d, want %d", got, watchBuffer)
	}
	select {
	case <-slow.dropped:
		t.Fatal("slow watcher dropped with a buffer that was not yet over")
	default:
	}

	// One more overflows the slow watcher only.
	publish(1, watchBuffer)
	select {
	case <-slow.dropped:
	default:
		t.Fatal("slow watcher not dropped after falling behind")
	}
	if got := drainWatcher(fast); !slices.Equal(got, []string{fmt.Sprintf("/t%d", watchBuffer)}) {
		t.Errorf("fast watcher received %q after the drop", got)
	}

	// The dropped watcher keeps what it had and gets nothing more; publishing
	// again neither blocks nor closes its dropped channel twice.
	publish(10, watchBuffer+1)
	if got := len(drainWatcher(slow)); got != watchBuffer {
		t.Errorf("dropped watcher holds %d transitions, want the %d it had", got, watchBuffer)
	}
	if got := len(drainWatcher(fast)); got != 10 {
		t.Errorf("fast watcher received %d after the drop, want 10", got)
	}
	select {
	case <-other.dropped:
		t.Error("a watcher that wanted nothing was dropped")
	default:
	}
	h.mu.Lock()
	n := len(h.subs)
	h.mu.Unlock()
	if n != 2 {
		t.Errorf("hub has %d watchers, want 2", n)
	}
}

// TestHubConcurrent exercises the hub from many goroutines for the race
// detector: publishers, readers and watchers coming and going.
func TestHubConcurrent(t *testing.T) {
	h := newHub()
	const publishers, perPublisher = 4, 200 // fewer than watchBuffer: the reader is never dropped
	reader := mustSubscribe(t, h, "g")
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				h.publish(testTransition("g", fmt.Sprintf("p%d-%d", p, i)))
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 50 {
				w := h.subscribe("g", nil)
				drainWatcher(w)
				h.unsubscribe(w)
			}
		})
	}
	got := 0
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for got < publishers*perPublisher {
			select {
			case <-reader.ch:
				got++
			case <-reader.dropped:
				return
			}
		}
	}()
	wg.Wait()
	select {
	case <-readerDone:
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not receive every transition")
	}
	if got != publishers*perPublisher {
		t.Errorf("reader received %d of %d transitions", got, publishers*perPublisher)
	}
}
