// Package store is the log-aggregator's on-disk index: records in
// compressed column blocks in a bbolt file, with the last indexed stream
// sequence, error signatures, live revisions and the retention policy
// committed in the same transactions, so indexing is exactly-once across a
// crash.
package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	"github.com/opsuite/opsuite/services/logaggregator/internal/signature"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

var (
	bucketMeta       = []byte("meta")
	bucketBlocks     = []byte("blocks")
	bucketBlockMeta  = []byte("blockmeta")
	bucketSignatures = []byte("signatures")
	bucketRevisions  = []byte("revisions")

	keyLastSeq    = []byte("last_stream_seq")
	keyStreamID   = []byte("stream_id")
	keyStreamBase = []byte("stream_base")
	keyPolicy     = []byte("retention_policy")
)

// Options tune the store.
type Options struct {
	// BlockRecords caps records per block; default 8192.
	BlockRecords int
	// SignatureLevel is the lowest level tracked in error signatures;
	// default WARN.
	SignatureLevel lav1.LogLevel
	// NoSync skips fsync on commit (benchmarks of the baseline only).
	NoSync bool
}

// Store is the index. Its methods are safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	wmu sync.Mutex // serialises writers
	// Buffers of Commit, reused under wmu.
	scratch []byte
	grp     []record.Record

	mu        sync.RWMutex
	blocks    []*BlockMeta // by ID
	lastSeq   uint64
	streamID  string
	base      uint64
	sigs      map[string]*Signature
	revisions map[string]Revision
	policy    *lav1.RetentionPolicy
}

// Revision is the application revision live in an environment.
type Revision struct {
	Revision  string `json:"revision"`
	RolloutID string `json:"rollout_id"`
	Time      int64  `json:"time"`
}

// Signature is a stored error signature.
type Signature struct {
	ID            string            `json:"id"`
	Template      string            `json:"template"`
	Scope         string            `json:"scope"`
	Application   string            `json:"application,omitempty"`
	Environment   string            `json:"environment,omitempty"`
	Level         lav1.LogLevel     `json:"level"`
	Total         uint64            `json:"total"`
	FirstSeen     int64             `json:"first_seen"`
	LastSeen      int64             `json:"last_seen"`
	FirstRevision string            `json:"first_revision,omitempty"`
	FirstRollout  string            `json:"first_rollout,omitempty"`
	Sample        string            `json:"sample"`
	SampleTrace   string            `json:"sample_trace,omitempty"`
	Sources       map[string]uint64 `json:"sources"`
}

// maxSignatureSources bounds the sources remembered per signature.
const maxSignatureSources = 50

// Open opens (creating) the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.BlockRecords <= 0 {
		opts.BlockRecords = 8192
	}
	if opts.SignatureLevel <= 0 {
		opts.SignatureLevel = lav1.LogLevel_LOG_LEVEL_WARN
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.NoSync = opts.NoSync
	s := &Store{db: db, opts: opts, sigs: map[string]*Signature{}, revisions: map[string]Revision{}}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("load store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketBlocks, bucketBlockMeta, bucketSignatures, bucketRevisions} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyLastSeq); len(v) == 8 {
			s.lastSeq = binary.BigEndian.Uint64(v)
		}
		if v := tx.Bucket(bucketMeta).Get(keyStreamBase); len(v) == 8 {
			s.base = binary.BigEndian.Uint64(v)
		}
		s.streamID = string(tx.Bucket(bucketMeta).Get(keyStreamID))
		if v := tx.Bucket(bucketMeta).Get(keyPolicy); v != nil {
			p := &lav1.RetentionPolicy{}
			if err := proto.Unmarshal(v, p); err != nil {
				return fmt.Errorf("retention policy: %w", err)
			}
			s.policy = p
		}
		if err := tx.Bucket(bucketBlockMeta).ForEach(func(k, v []byte) error {
			m, err := decodeMeta(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			s.blocks = append(s.blocks, m)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSignatures).ForEach(func(k, v []byte) error {
			sig := &Signature{}
			if err := json.Unmarshal(v, sig); err != nil {
				return fmt.Errorf("signature %s: %w", k, err)
			}
			s.sigs[sig.ID] = sig
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", k, err)
			}
			s.revisions[string(k)] = r
			return nil
		})
	})
}

// LastStreamSeq is the last position whose records are indexed. Positions
// are the write-ahead stream's sequences plus StreamBase, so they keep
// increasing across a recreation of the stream.
func (s *Store) LastStreamSeq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastSeq
}

// Stream returns the identity of the write-ahead stream the index follows
// ("" until SetStream) and the base its sequences are offset by.
func (s *Store) Stream() (id string, base uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.streamID, s.base
}

// SetStream records the identity of the write-ahead stream the index
// follows. With rebase, the stream's sequences no longer line up with the
// index (it was recreated, or lost messages): its sequence indexedSeq
// becomes position LastStreamSeq(), so its later messages follow everything
// indexed before and nothing is overwritten or indexed twice.
func (s *Store) SetStream(id string, rebase bool, indexedSeq uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	base := s.base
	if rebase {
		if indexedSeq > s.lastSeq {
			s.mu.RUnlock()
			return fmt.Errorf("rebase stream %s at %d: beyond indexed position %d", id, indexedSeq, s.lastSeq)
		}
		base = s.lastSeq - indexedSeq
	}
	s.mu.RUnlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], base)
		if err := tx.Bucket(bucketMeta).Put(keyStreamBase, v[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyStreamID, []byte(id))
	})
	if err != nil {
		return fmt.Errorf("record stream %s: %w", id, err)
	}
	s.mu.Lock()
	s.streamID, s.base = id, base
	s.mu.Unlock()
	return nil
}

func idKey(id uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], id)
	return k[:]
}

// NewSignature is a signature first seen in a commit, with the record that
// created it.
type NewSignature struct {
	Signature Signature
	First     record.Record
}

// Commit stores recs (in storage order) and records lastStreamSeq as
// indexed, in one durable transaction. It returns the signatures seen for
// the first time. A commit whose lastStreamSeq is not beyond the stored
// one is refused, so a replay never stores records twice.
func (s *Store) Commit(recs []record.Record, lastStreamSeq uint64) ([]NewSignature, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	prev := s.lastSeq
	s.mu.RUnlock()
	if lastStreamSeq <= prev {
		return nil, fmt.Errorf("commit up to stream sequence %d: already indexed up to %d", lastStreamSeq, prev)
	}
	// Group by source and labels, keeping storage order within groups:
	// runs of consecutive records sharing both.
	type run struct{ start, end int }
	groups := map[string][]run{}
	var order []string
	for i := 0; i < len(recs); {
		j := i + 1
		for j < len(recs) && recs[j].Source == recs[i].Source && recs[j].Labels.Equal(recs[i].Labels) {
			j++
		}
		k := groupKey(&recs[i])
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], run{i, j})
		i = j
	}
	changed, created := s.trackSignatures(recs)
	var metas []*BlockMeta
	err := s.db.Update(func(tx *bolt.Tx) error {
		bb, mb := tx.Bucket(bucketBlocks), tx.Bucket(bucketBlockMeta)
		scratch, grp := s.scratch, s.grp
		defer func() { s.scratch, s.grp = scratch, grp[:0] }()
		put := func(blk []record.Record) error {
			id, err := bb.NextSequence()
			if err != nil {
				return err
			}
			var body []byte
			var m BlockMeta
			body, m, scratch = encodeBlock(blk, scratch)
			m.ID = id
			if err := bb.Put(idKey(id), body); err != nil {
				return err
			}
			if err := mb.Put(idKey(id), encodeMeta(&m)); err != nil {
				return err
			}
			metas = append(metas, &m)
			return nil
		}
		for _, k := range order {
			runs := groups[k]
			all := recs[runs[0].start:runs[0].end]
			if len(runs) > 1 {
				// Scattered group: gather its records.
				grp = grp[:0]
				for _, r := range runs {
					grp = append(grp, recs[r.start:r.end]...)
				}
				all = grp
			}
			for len(all) > 0 {
				n := min(len(all), s.opts.BlockRecords)
				if err := put(all[:n]); err != nil {
					return err
				}
				all = all[n:]
			}
			clear(grp) // drop references to committed messages
			grp = grp[:0]
		}
		sb := tx.Bucket(bucketSignatures)
		for _, sig := range changed {
			v, err := json.Marshal(sig)
			if err != nil {
				return err
			}
			if err := sb.Put([]byte(sig.ID), v); err != nil {
				return err
			}
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], lastStreamSeq)
		return tx.Bucket(bucketMeta).Put(keyLastSeq, v[:])
	})
	if err != nil {
		return nil, fmt.Errorf("commit %d records: %w", len(recs), err)
	}
	s.mu.Lock()
	s.blocks = append(s.blocks, metas...)
	s.lastSeq = lastStreamSeq
	for _, sig := range changed {
		s.sigs[sig.ID] = sig
	}
	s.mu.Unlock()
	out := make([]NewSignature, 0, len(created))
	for _, c := range created {
		sig := *changed[c.id]
		sig.Sources = nil
		out = append(out, NewSignature{Signature: sig, First: recs[c.index]})
	}
	return out, nil
}

// SignatureScope returns the scope, application and environment of a
// record's signature.
func SignatureScope(r *record.Record) (scope, app, env string) {
	app, _ = r.Labels.Get("app")
	env, _ = r.Labels.Get("environment")
	if app == "" {
		return "source:" + r.Source, "", ""
	}
	return "app:" + app + "\x00" + env, app, env
}

// trackSignatures computes the signature updates of recs: copies of the
// changed signatures, and which of them are new.
type createdSig struct {
	id    string
	index int
}

func (s *Store) trackSignatures(recs []record.Record) (changed map[string]*Signature, created []createdSig) {
	changed = map[string]*Signature{}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range recs {
		r := &recs[i]
		if r.Level < s.opts.SignatureLevel {
			continue
		}
		scope, app, env := SignatureScope(r)
		tmpl := signature.Template(r.Message)
		id := signature.ID(scope, tmpl)
		sig := changed[id]
		if sig == nil {
			if old := s.sigs[id]; old != nil {
				cp := *old
				cp.Sources = make(map[string]uint64, len(old.Sources)+1)
				for k, v := range old.Sources {
					cp.Sources[k] = v
				}
				sig = &cp
			} else {
				sig = &Signature{ID: id, Template: tmpl, Scope: scope, Application: app, Environment: env,
					FirstSeen: r.Time, LastSeen: r.Time, Sources: map[string]uint64{}}
				if app != "" {
					rev, ok := s.revisions[revKey(app, env)]
					if !ok {
						rev, ok = s.revisions[revKey(app, "")]
					}
					if ok {
						sig.FirstRevision, sig.FirstRollout = rev.Revision, rev.RolloutID
					} else if v, ok := r.Labels.Get("revision"); ok {
						sig.FirstRevision = v
					}
				}
				created = append(created, createdSig{id: id, index: i})
			}
			changed[id] = sig
		}
		sig.Total++
		sig.Level = max(sig.Level, r.Level)
		sig.FirstSeen = min(sig.FirstSeen, r.Time)
		if r.Time >= sig.LastSeen {
			sig.LastSeen = r.Time
			sig.Sample, sig.SampleTrace = r.Message, r.TraceID
			if len(sig.Sample) > 4096 {
				sig.Sample = sig.Sample[:4096]
			}
		}
		if _, ok := sig.Sources[r.Source]; ok || len(sig.Sources) < maxSignatureSources {
			sig.Sources[r.Source]++
		}
	}
	return changed, created
}

func revKey(app, env string) string { return app + "\x00" + env }

// SetRevision records the revision live for app in env (and as the app's
// latest, for records without an environment label).
func (s *Store) SetRevision(app, env string, rev Revision) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	v, err := json.Marshal(rev)
	if err != nil {
		return err
	}
	keys := []string{revKey(app, env), revKey(app, "")}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range keys {
			if err := tx.Bucket(bucketRevisions).Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store revision of %s/%s: %w", app, env, err)
	}
	s.mu.Lock()
	for _, k := range keys {
		s.revisions[k] = rev
	}
	s.mu.Unlock()
	return nil
}

// LiveRevision returns the revision recorded for app in env.
func (s *Store) LiveRevision(app, env string) (Revision, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.revisions[revKey(app, env)]
	return r, ok
}

// Signature returns a copy of signature id.
func (s *Store) Signature(id string) (Signature, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sig, ok := s.sigs[id]
	if !ok {
		return Signature{}, false
	}
	return *sig, true
}

// Policy returns the stored retention policy, nil when none was stored.
func (s *Store) Policy() *lav1.RetentionPolicy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.policy == nil {
		return nil
	}
	return proto.CloneOf(s.policy)
}

// SetPolicy stores p durably.
func (s *Store) SetPolicy(p *lav1.RetentionPolicy) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	v, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyPolicy, v) }); err != nil {
		return fmt.Errorf("store retention policy: %w", err)
	}
	s.mu.Lock()
	s.policy = proto.CloneOf(p)
	s.mu.Unlock()
	return nil
}

// Blocks returns the block metadata (shared, read-only).
func (s *Store) Blocks() []*BlockMeta {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.blocks)
}

// SourceStats is one source's stored volume.
type SourceStats struct {
	Source              string
	Records, Bytes      uint64
	FirstTime, LastTime int64
}

// Sources returns per-source volume of sources at or below prefix (all when
// empty), ordered by source.
func (s *Store) Sources(prefix string) []SourceStats {
	by := map[string]*SourceStats{}
	for _, m := range s.Blocks() {
		if prefix != "" && !under(m.Source, prefix) {
			continue
		}
		st := by[m.Source]
		if st == nil {
			st = &SourceStats{Source: m.Source, FirstTime: m.MinTime, LastTime: m.MaxTime}
			by[m.Source] = st
		}
		st.Records += uint64(m.Count)
		st.Bytes += uint64(m.Bytes)
		st.FirstTime, st.LastTime = min(st.FirstTime, m.MinTime), max(st.LastTime, m.MaxTime)
	}
	out := make([]SourceStats, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

func under(src, parent string) bool {
	return src == parent || strings.HasPrefix(src, parent) && len(src) > len(parent) && src[len(parent)] == '/'
}

// Signatures returns copies of every stored signature.
func (s *Store) Signatures() []Signature {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Signature, 0, len(s.sigs))
	for _, sig := range s.sigs {
		out = append(out, *sig)
	}
	return out
}
