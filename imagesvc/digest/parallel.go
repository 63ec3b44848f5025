package digest

import (
	"hash"
	"sync"
	"sync/atomic"
)

// Parallel feeds the same bytes to several hashes, each in its own
// goroutine, so hashing an upload with md5, sha512 and sha256 (Glance's
// checksum, os_hash_value, and the layer digests) uses more than one core.
// Write copies the bytes, so the caller may reuse its buffer at once.
// Call Close before reading the sums.
type Parallel struct {
	chans []chan *chunk
	wg    sync.WaitGroup
	pool  sync.Pool
}

type chunk struct {
	b    []byte
	refs atomic.Int32
}

const chunkSize = 256 << 10

// NewParallel hashes into hs concurrently.
func NewParallel(hs ...hash.Hash) *Parallel {
	p := &Parallel{}
	p.pool.New = func() any { return &chunk{b: make([]byte, 0, chunkSize)} }
	for _, h := range hs {
		ch := make(chan *chunk, 16)
		p.chans = append(p.chans, ch)
		p.wg.Add(1)
		go func(h hash.Hash) {
			defer p.wg.Done()
			for c := range ch {
				h.Write(c.b)
				if c.refs.Add(-1) == 0 {
					c.b = c.b[:0]
					p.pool.Put(c)
				}
			}
		}(h)
	}
	return p
}

// Write implements io.Writer; it never fails.
func (p *Parallel) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		c := p.pool.Get().(*chunk)
		k := min(len(b), chunkSize)
		c.b = append(c.b[:0], b[:k]...)
		c.refs.Store(int32(len(p.chans)))
		for _, ch := range p.chans {
			ch <- c
		}
		b = b[k:]
	}
	return n, nil
}

// Close waits for the hashes to take in everything written.
func (p *Parallel) Close() {
	for _, ch := range p.chans {
		close(ch)
	}
	p.wg.Wait()
}
