package healthchecker

import (
	"slices"
	"sync"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
)

// watchBuffer is how many transitions a watcher may fall behind before it is
// dropped.
const watchBuffer = 1024

// hub fans transitions out to watchers without ever blocking the checker.
type hub struct {
	mu   sync.Mutex
	subs map[*watcher]struct{}
}

type watcher struct {
	group   string
	names   []string
	ch      chan *hcv1.TargetTransition
	dropped chan struct{}
}

func (w *watcher) wants(tr *hcv1.TargetTransition) bool {
	if w.group != "" && tr.GetGroup() != w.group {
		return false
	}
	return len(w.names) == 0 || slices.Contains(w.names, tr.GetName())
}

func newHub() *hub { return &hub{subs: map[*watcher]struct{}{}} }

func (h *hub) subscribe(group string, names []string) *watcher {
	w := &watcher{group: group, names: names, ch: make(chan *hcv1.TargetTransition, watchBuffer), dropped: make(chan struct{})}
	h.mu.Lock()
	h.subs[w] = struct{}{}
	h.mu.Unlock()
	return w
}

func (h *hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	delete(h.subs, w)
	h.mu.Unlock()
}

func (h *hub) publish(tr *hcv1.TargetTransition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.subs {
		if !w.wants(tr) {
			continue
		}
		select {
		case w.ch <- tr:
		default:
			// Too slow: drop the watcher rather than block checks or lose
			// transitions silently; it learns so and can resubscribe.
			delete(h.subs, w)
			close(w.dropped)
		}
	}
}
