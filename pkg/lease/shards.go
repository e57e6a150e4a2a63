package lease

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Shard defaults.
const (
	DefaultShards   = 32
	DefaultShardTTL = 10 * time.Second
)

// ShardsConfig spreads Count shards of a group of replicas over the live
// ones.
type ShardsConfig struct {
	// Group names the replicas sharing the shards (e.g. the service name);
	// letters, digits, '-', '_', '='.
	Group string
	// Count is the number of shards; default DefaultShards. Every replica
	// of a group must use the same count.
	Count int
	// TTL of the shard and membership leases; default DefaultShardTTL. A
	// killed replica's shards are taken over about TTL after its last
	// renewal.
	TTL time.Duration
	// Work runs while this replica owns shard, in a goroutine of its own,
	// and must return soon after ctx ends (shard lost, handed to another
	// replica, or Run ending). The shard's lease is released only after
	// Work returns.
	Work func(ctx context.Context, shard int)
}

// Shards keeps this replica's share of a group's shards: each replica
// announces itself with a membership lease, and every TTL/3 (and whenever
// a lease of the group changes) takes free shards up to its quota or hands
// its excess back. With m members in sorted order, member i's quota is
// Count/m, plus one when i < Count%m, so the quotas add up to Count. A
// replica prefers shards s with s%m == i, which keeps two replicas from
// racing for the same shards.
type Shards struct {
	store   *Store
	cfg     ShardsConfig
	prefix  string
	wake    chan struct{}
	stopped chan int
	ready   chan struct{}
	once    sync.Once

	mu      sync.Mutex
	owned   map[int]*heldShard
	members map[string]bool // holder ids with a membership lease
	owners  map[int]string  // shard → holder, as seen in the bucket
}

type heldShard struct {
	lease   *Lease
	cancel  context.CancelFunc
	leaving bool
}

// Shards prepares cfg's shards for this Store's holder; Run takes them.
func (s *Store) Shards(cfg ShardsConfig) (*Shards, error) {
	if !tokenRE.MatchString(cfg.Group) {
		return nil, fmt.Errorf("lease: shard group %q: want letters, digits, '-', '_' or '='", cfg.Group)
	}
	if cfg.Work == nil {
		return nil, errors.New("lease: shard group " + cfg.Group + ": Work is required")
	}
	if cfg.Count <= 0 {
		cfg.Count = DefaultShards
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultShardTTL
	}
	cfg.TTL = roundTTL(cfg.TTL)
	return &Shards{
		store: s, cfg: cfg, prefix: "shards." + cfg.Group + ".",
		wake: make(chan struct{}, 1), stopped: make(chan int, cfg.Count), ready: make(chan struct{}),
		owned: map[int]*heldShard{}, members: map[string]bool{}, owners: map[int]string{},
	}, nil
}

// ShardOf maps key to one of count shards (FNV-1a), the same in every
// replica.
func ShardOf(key string, count int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(count))
}

// Ready is closed once Run has seen the group and taken its first share
// (possibly none, when others hold every shard).
func (sh *Shards) Ready() <-chan struct{} { return sh.ready }

// Count is the number of shards.
func (sh *Shards) Count() int { return sh.cfg.Count }

// Owns reports whether this replica holds shard and is not handing it over.
func (sh *Shards) Owns(shard int) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	h, ok := sh.owned[shard]
	return ok && !h.leaving && h.lease.Err() == nil
}

// Owned lists the shards this replica holds, ascending.
func (sh *Shards) Owned() []int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []int
	for n, h := range sh.owned {
		if !h.leaving && h.lease.Err() == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Members lists the replicas of the group seen alive, sorted.
func (sh *Shards) Members() []string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.memberListLocked()
}

func (sh *Shards) memberListLocked() []string {
	out := make([]string, 0, len(sh.members)+1)
	for m := range sh.members {
		out = append(out, m)
	}
	if !sh.members[sh.store.holder] {
		out = append(out, sh.store.holder)
	}
	slices.Sort(out)
	return out
}

func (sh *Shards) memberKey() string     { return sh.prefix + "member." + sh.store.holder }
func (sh *Shards) shardKey(n int) string { return sh.prefix + "shard." + strconv.Itoa(n) }

// Run announces this replica, keeps its share of shards running Work until
// ctx ends, then stops every Work, releases its leases and returns.
func (sh *Shards) Run(ctx context.Context) error {
	w, err := sh.store.kv.Watch(ctx, sh.prefix+">")
	if err != nil {
		return fmt.Errorf("lease: watch shard group %s: %w", sh.cfg.Group, err)
	}
	defer func() { _ = w.Stop() }()
	member, err := sh.store.TryAcquire(ctx, sh.memberKey(), sh.cfg.TTL)
	if err != nil {
		return fmt.Errorf("lease: join shard group %s: %w", sh.cfg.Group, err)
	}
	defer func() {
		sh.stopAll()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = member.Release(rctx)
	}()

	tick := time.NewTicker(sh.cfg.TTL / 3)
	defer tick.Stop()
	synced := false
	for {
		var lost <-chan struct{}
		if member != nil {
			lost = member.Lost()
		}
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("lease: watch of shard group %s ended", sh.cfg.Group)
			}
			if e == nil {
				synced = true
			} else {
				sh.observe(e)
			}
			if synced {
				sh.poke()
			}
			continue
		case n := <-sh.stopped:
			sh.mu.Lock()
			delete(sh.owned, n)
			sh.mu.Unlock()
		case <-lost:
			member = nil
		case <-tick.C:
		case <-sh.wake:
		}
		if member == nil {
			if member, err = sh.store.TryAcquire(ctx, sh.memberKey(), sh.cfg.TTL); err != nil {
				member = nil
				sh.store.log.Warn("rejoin shard group", "group", sh.cfg.Group, "err", err)
			}
		}
		if synced {
			sh.rebalance(ctx)
			sh.once.Do(func() { close(sh.ready) })
		}
	}
}

// poke asks the loop to rebalance soon.
func (sh *Shards) poke() {
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

// observe applies one change of the group's keys to the view.
func (sh *Shards) observe(e jetstream.KeyValueEntry) {
	rest := strings.TrimPrefix(e.Key(), sh.prefix)
	present := e.Operation() == jetstream.KeyValuePut
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch {
	case strings.HasPrefix(rest, "member."):
		id := strings.TrimPrefix(rest, "member.")
		if present {
			sh.members[id] = true
		} else {
			delete(sh.members, id)
		}
	case strings.HasPrefix(rest, "shard."):
		n, err := strconv.Atoi(strings.TrimPrefix(rest, "shard."))
		if err != nil {
			return
		}
		if !present {
			delete(sh.owners, n)
			return
		}
		r, err := decode(e)
		if err != nil {
			return
		}
		sh.owners[n] = r.Holder
	}
}

// rebalance hands back shards over quota and takes free ones under it.
func (sh *Shards) rebalance(ctx context.Context) {
	sh.mu.Lock()
	members := sh.memberListLocked()
	m := len(members)
	idx := slices.Index(members, sh.store.holder)
	quota := sh.cfg.Count / m
	if idx < sh.cfg.Count%m {
		quota++
	}
	preferred := func(n int) bool { return n%m == idx }
	var mine []int
	for n, h := range sh.owned {
		if !h.leaving && h.lease.Err() == nil {
			mine = append(mine, n)
		}
	}
	if excess := len(mine) - quota; excess > 0 {
		// Hand back others' preferred shards first, highest first.
		slices.SortFunc(mine, func(a, b int) int {
			if pa, pb := preferred(a), preferred(b); pa != pb {
				if pa {
					return 1
				}
				return -1
			}
			return b - a
		})
		for _, n := range mine[:excess] {
			h := sh.owned[n]
			h.leaving = true
			h.cancel()
		}
		sh.mu.Unlock()
		return
	}
	want := quota - len(mine)
	var free []int
	for n := range sh.cfg.Count {
		if _, ok := sh.owned[n]; ok {
			continue
		}
		if h, taken := sh.owners[n]; taken && h != sh.store.holder {
			continue // an earlier run of this holder left it: reclaimed below
		}
		free = append(free, n)
	}
	sh.mu.Unlock()
	if want <= 0 || len(free) == 0 {
		return
	}
	slices.SortStableFunc(free, func(a, b int) int {
		if pa, pb := preferred(a), preferred(b); pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		return 0
	})
	for _, n := range free {
		if want == 0 || ctx.Err() != nil {
			return
		}
		l, err := sh.store.TryAcquire(ctx, sh.shardKey(n), sh.cfg.TTL)
		if err != nil {
			continue
		}
		want--
		sh.start(n, l)
	}
}

// start runs Work for shard n under lease l.
func (sh *Shards) start(n int, l *Lease) {
	wctx, cancel := context.WithCancel(l.Context())
	sh.mu.Lock()
	sh.owned[n] = &heldShard{lease: l, cancel: cancel}
	sh.owners[n] = sh.store.holder
	sh.mu.Unlock()
	go func() {
		defer func() { sh.stopped <- n }()
		sh.cfg.Work(wctx, n)
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(wctx), 5*time.Second)
		defer rcancel()
		if err := l.Release(rctx); err != nil {
			sh.store.log.Warn("release shard", "group", sh.cfg.Group, "shard", n, "err", err)
		}
	}()
}

// stopAll ends every Work and waits until their leases are released.
func (sh *Shards) stopAll() {
	sh.mu.Lock()
	n := len(sh.owned)
	for _, h := range sh.owned {
		h.leaving = true
		h.cancel()
	}
	sh.mu.Unlock()
	for range n {
		k := <-sh.stopped
		sh.mu.Lock()
		delete(sh.owned, k)
		sh.mu.Unlock()
	}
}
