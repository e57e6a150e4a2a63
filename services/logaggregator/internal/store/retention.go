package store

import (
	"fmt"
	"sort"
	"time"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"
	"github.com/opsuite/opsuite/services/logaggregator/internal/record"
	bolt "go.etcd.io/bbolt"
)

// Delete removes the records of source (and below) with start <= time <
// end (0: unbounded) durably, rewriting blocks that straddle the range. With
// validateOnly it only counts them.
func (s *Store) Delete(source string, start, end int64, validateOnly bool) (uint64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	inRange := func(t int64) bool { return (start == 0 || t >= start) && (end == 0 || t < end) }
	var victims []*BlockMeta
	for _, m := range s.Blocks() {
		if !under(m.Source, source) {
			continue
		}
		if (start == 0 || m.MaxTime >= start) && (end == 0 || m.MinTime < end) {
			victims = append(victims, m)
		}
	}
	var count uint64
	removed := map[uint64]bool{}
	replaced := map[uint64]*BlockMeta{}
	apply := func(tx *bolt.Tx) error {
		bb, mb := tx.Bucket(bucketBlocks), tx.Bucket(bucketBlockMeta)
		var buf []byte
		for _, m := range victims {
			if inRange(m.MinTime) && inRange(m.MaxTime) {
				count += uint64(m.Count)
				removed[m.ID] = true
				continue
			}
			body := bb.Get(idKey(m.ID))
			if body == nil {
				continue
			}
			v, nbuf, err := decodeBlock(m, body, buf)
			if err != nil {
				return err
			}
			buf = nbuf
			var keep []record.Record
			for i := 0; i < v.n; i++ {
				if inRange(v.times[i]) {
					count++
					continue
				}
				keep = append(keep, v.record(i))
			}
			if len(keep) == v.n {
				continue
			}
			if len(keep) == 0 {
				removed[m.ID] = true
				continue
			}
			nbody, nm, _ := encodeBlock(keep, nil)
			nm.ID = m.ID
			replaced[m.ID] = &nm
			if validateOnly {
				continue
			}
			if err := bb.Put(idKey(m.ID), nbody); err != nil {
				return err
			}
			if err := mb.Put(idKey(m.ID), encodeMeta(&nm)); err != nil {
				return err
			}
		}
		if validateOnly {
			return nil
		}
		for id := range removed {
			if err := bb.Delete(idKey(id)); err != nil {
				return err
			}
			if err := mb.Delete(idKey(id)); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if validateOnly {
		err = s.db.View(apply)
	} else {
		err = s.db.Update(apply)
	}
	if err != nil {
		return 0, fmt.Errorf("delete records of %s: %w", source, err)
	}
	if !validateOnly {
		s.swapBlocks(removed, replaced)
	}
	return count, nil
}

func (s *Store) swapBlocks(removed map[uint64]bool, replaced map[uint64]*BlockMeta) {
	if len(removed) == 0 && len(replaced) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.blocks[:0:0]
	for _, m := range s.blocks {
		if removed[m.ID] {
			continue
		}
		if r := replaced[m.ID]; r != nil {
			m = r
		}
		out = append(out, m)
	}
	s.blocks = out
}

// LimitsFor returns the limits applying to source under p and the source
// of the rule they come from ("" for the default limits).
func LimitsFor(p *lav1.RetentionPolicy, source string) (*lav1.RetentionLimits, string) {
	best, bestSrc := p.GetDefaultLimits(), ""
	for _, sr := range p.GetSources() {
		if under(source, sr.GetSource()) && len(sr.GetSource()) > len(bestSrc) {
			best, bestSrc = sr.GetLimits(), sr.GetSource()
		}
	}
	return best, bestSrc
}

// RetentionResult tells what a retention pass removed.
type RetentionResult struct {
	Blocks, Records, Bytes uint64
	Signatures             int
}

// ApplyRetention removes whole blocks beyond p's limits at now: too old, or
// the oldest of a source (or of a per-source rule's subtree) over its size,
// or the oldest of all over the total cap.
func (s *Store) ApplyRetention(p *lav1.RetentionPolicy, now time.Time) (RetentionResult, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var res RetentionResult
	blocks := s.Blocks()
	removed := map[uint64]bool{}
	type group struct {
		max    uint64
		blocks []*BlockMeta
	}
	groups := map[string]*group{}
	nowNs := now.UnixNano()
	for _, m := range blocks {
		lim, rule := LimitsFor(p, m.Source)
		if age := lim.GetMaxAge().AsDuration(); age > 0 && m.MaxTime < nowNs-int64(age) {
			removed[m.ID] = true
			continue
		}
		if mb := lim.GetMaxBytes(); mb > 0 {
			key := "rule:" + rule
			if rule == "" {
				key = "source:" + m.Source
			}
			g := groups[key]
			if g == nil {
				g = &group{max: mb}
				groups[key] = g
			}
			g.blocks = append(g.blocks, m)
		}
	}
	oldestFirst := func(bs []*BlockMeta) {
		sort.SliceStable(bs, func(i, j int) bool { return bs[i].MaxTime < bs[j].MaxTime })
	}
	for _, g := range groups {
		var total uint64
		for _, m := range g.blocks {
			total += uint64(m.Bytes)
		}
		oldestFirst(g.blocks)
		for _, m := range g.blocks {
			if total <= g.max {
				break
			}
			removed[m.ID] = true
			total -= uint64(m.Bytes)
		}
	}
	if capBytes := p.GetMaxTotalBytes(); capBytes > 0 {
		var rest []*BlockMeta
		var total uint64
		for _, m := range blocks {
			if !removed[m.ID] {
				rest = append(rest, m)
				total += uint64(m.Bytes)
			}
		}
		oldestFirst(rest)
		for _, m := range rest {
			if total <= capBytes {
				break
			}
			removed[m.ID] = true
			total -= uint64(m.Bytes)
		}
	}
	var staleSigs []string
	if age := p.GetDefaultLimits().GetMaxAge().AsDuration(); age > 0 {
		for _, sig := range s.Signatures() {
			if sig.LastSeen < nowNs-int64(age) {
				staleSigs = append(staleSigs, sig.ID)
			}
		}
	}
	if len(removed) == 0 && len(staleSigs) == 0 {
		return res, nil
	}
	for _, m := range blocks {
		if removed[m.ID] {
			res.Blocks++
			res.Records += uint64(m.Count)
			res.Bytes += uint64(m.Bytes)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		bb, mb, sb := tx.Bucket(bucketBlocks), tx.Bucket(bucketBlockMeta), tx.Bucket(bucketSignatures)
		for id := range removed {
			if err := bb.Delete(idKey(id)); err != nil {
				return err
			}
			if err := mb.Delete(idKey(id)); err != nil {
				return err
			}
		}
		for _, id := range staleSigs {
			if err := sb.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return RetentionResult{}, fmt.Errorf("apply retention: %w", err)
	}
	s.swapBlocks(removed, nil)
	if len(staleSigs) > 0 {
		s.mu.Lock()
		for _, id := range staleSigs {
			delete(s.sigs, id)
		}
		s.mu.Unlock()
		res.Signatures = len(staleSigs)
	}
	return res, nil
}
