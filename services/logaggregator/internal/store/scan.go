package store

import (
	"bytes"
	"runtime"
	"sort"
	"sync"

	lav1 "github.com/opsuite/opsuite/gen/opsuite/logaggregator/v1"

	"github.com/opsuite/opsuite/services/logaggregator/internal/filter"
)

// blockResult is one block read by a scan worker: the records that pass
// the level and text filters (cands), with the block decoded when there are
// any.
type blockResult struct {
	meta  *BlockMeta
	v     *blockView
	cands []int32
	err   error
}

type blockJob struct {
	meta *BlockMeta
	body []byte
	out  chan blockResult
}

// scanBlocks reads blocks (bodies from get, in order) with parallel
// workers and hands the results to consume in the same order, until
// consume returns false. get is called from one goroutine only (the bbolt
// transaction's); every worker has stopped when scanBlocks returns.
func scanBlocks(f *filter.Filter, blocks []*BlockMeta, get func(*BlockMeta) []byte, consume func(blockResult) bool) {
	workers := min(runtime.GOMAXPROCS(0), 4, max(len(blocks), 1))
	jobs := make(chan blockJob, workers)
	futures := make(chan chan blockResult, 2*workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			var offs []uint32
			for j := range jobs {
				r := blockResult{meta: j.meta}
				r.v, r.cands, buf, offs, r.err = readBlock(f, j.meta, j.body, buf, offs)
				j.out <- r
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		defer close(futures)
		for _, m := range blocks {
			body := get(m)
			if body == nil {
				continue // deleted since
			}
			out := make(chan blockResult, 1)
			select {
			case futures <- out:
			case <-stop:
				return
			}
			select {
			case jobs <- blockJob{meta: m, body: body, out: out}:
			case <-stop:
				return
			}
		}
	}()
	stopped := false
	for fut := range futures {
		if stopped {
			continue
		}
		select {
		case r := <-fut:
			if !consume(r) {
				stopped = true
				close(stop)
			}
		case <-stop:
		}
	}
	if !stopped {
		close(stop)
	}
	wg.Wait()
}

// readBlock decompresses a block and finds the records that pass the level
// and text filters; only a block with such records is decoded whole (and
// keeps buf, so the worker starts a new one).
func readBlock(f *filter.Filter, m *BlockMeta, body, buf []byte, offs []uint32) (*blockView, []int32, []byte, []uint32, error) {
	raw, buf, err := decompress(m, body, buf)
	if err != nil {
		return nil, nil, buf, offs, err
	}
	var mv msgView
	if err := indexMessages(&mv, raw, offs); err != nil {
		return nil, nil, buf, offs, err
	}
	offs = mv.msgOff
	cands := candidates(f, &mv)
	if len(cands) == 0 {
		return nil, nil, buf, offs, nil
	}
	// The view keeps buf and offs: the worker must not reuse them.
	v, err := indexRest(m, mv)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return v, cands, nil, nil, nil
}

// candidates lists the records of mv whose level passes and whose message
// may match the text filters (records with metadata are kept for the
// caller's full check).
func candidates(f *filter.Filter, mv *msgView) []int32 {
	var out []int32
	levelOK := func(i int) bool { return f.MatchLevel(levelOf(mv.levels[i])) }
	needle := f.Needle()
	if needle == nil {
		for i := 0; i < mv.n; i++ {
			if !levelOK(i) {
				continue
			}
			if f.HasText() && mv.flags[i]&flagMetadata == 0 && !f.MatchMessageOnly(mv.message(i)) {
				continue
			}
			out = append(out, int32(i))
		}
		return out
	}
	// One pass of bytes.Index over the concatenated messages; a hit that
	// spans two messages is not a match.
	var hits []int32
	for pos := 0; pos < len(mv.msgs); {
		j := bytes.Index(mv.msgs[pos:], needle)
		if j < 0 {
			break
		}
		o := pos + j
		i := sort.Search(mv.n, func(k int) bool { return int(mv.msgOff[k+1]) > o })
		if i < mv.n && o+len(needle) <= int(mv.msgOff[i+1]) {
			hits = append(hits, int32(i))
			pos = int(mv.msgOff[i+1])
		} else {
			pos = o + 1
		}
	}
	hasMeta := false
	for _, fl := range mv.flags {
		if fl&flagMetadata != 0 {
			hasMeta = true
			break
		}
	}
	if !hasMeta {
		for _, i := range hits {
			if levelOK(int(i)) {
				out = append(out, i)
			}
		}
		return out
	}
	h := 0
	for i := 0; i < mv.n; i++ {
		hit := h < len(hits) && hits[h] == int32(i)
		if hit {
			h++
		}
		if (hit || mv.flags[i]&flagMetadata != 0) && levelOK(i) {
			out = append(out, int32(i))
		}
	}
	return out
}

func levelOf(b byte) lav1.LogLevel { return lav1.LogLevel(b) }
