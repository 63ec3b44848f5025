package compute

import (
	"sync"
	"time"

	"berth/region/store"
)

// renderCache keeps the JSON bodies of the servers region has rendered,
// so a list or show of a server that has not changed copies its body
// instead of reading its whole row and ports, building the view and
// encoding it again (region's CPU for a page of 1,000 servers fell from
// 20-46 ms to about 2 ms: docs/performance.md, scenario 4).
//
// A body is kept under the server's id and the viewOpts it was rendered
// with, and carries the store.ServerVersion of the data it came from. It
// is served only to a request that has just read the same version from
// the database (in the query that lists the page), so a change made
// through any region replica, or straight in the database, shows on the
// next read: the cache never decides freshness by itself, it only saves
// work.
//
// Memory is bounded by bytes, in two generations: new and re-used bodies
// go to the current one; when it holds half the limit, or is older than
// half of maxAge, it becomes the old one and the old one is dropped. A
// body found in the old generation moves to the current one, so what is
// read stays and what is not goes. Nothing is older than maxAge without
// being read since (which keeps a server version's xmin from outliving
// PostgreSQL's 2^32 transaction ids by a factor of millions).
type renderCache struct {
	mu       sync.Mutex
	limit    int
	gen      time.Duration
	now      func() time.Time
	cur, old map[string][]rendered // by server id, one per viewOpts
	curBytes int
	curSince time.Time
}

// renderKey names a body: the server and the options it is rendered with.
type renderKey struct {
	id   string
	opts viewOpts
}

type rendered struct {
	opts    viewOpts
	version store.ServerVersion
	body    []byte
}

// Defaults of Config.RenderCacheBytes and the longest a body is kept
// without being read.
const (
	defaultRenderCacheBytes = 64 << 20
	renderCacheMaxAge       = 10 * time.Minute
)

// entryOverhead approximates what a body costs beyond its bytes and its
// key's strings: map entry, slice element and headers.
const entryOverhead = 160

func newRenderCache(limit int, maxAge time.Duration, now func() time.Time) *renderCache {
	if limit <= 0 {
		return nil
	}
	return &renderCache{limit: limit, gen: maxAge / 2, now: now, cur: map[string][]rendered{}, curSince: now()}
}

func size(id string, e rendered) int {
	return len(e.body) + len(id) + len(e.opts.base) + len(e.opts.hostStatus) + entryOverhead
}

// age turns the generations over when the current one is due.
func (c *renderCache) age() {
	now := c.now()
	switch d := now.Sub(c.curSince); {
	case d >= 2*c.gen:
		c.old, c.cur, c.curBytes, c.curSince = nil, map[string][]rendered{}, 0, now
	case d >= c.gen:
		c.rotate(now)
	}
}

func (c *renderCache) rotate(now time.Time) {
	c.old, c.cur, c.curBytes, c.curSince = c.cur, make(map[string][]rendered, len(c.cur)), 0, now
}

// find is the index in es of the body rendered with opts, or -1.
func find(es []rendered, opts viewOpts) int {
	for i := range es {
		if es[i].opts == opts {
			return i
		}
	}
	return -1
}

// lookup fills bodies[i] with the body of keys[i] at versions[i] where one
// is kept, and returns the indexes it could not fill. A nil cache fills
// none.
func (c *renderCache) lookup(keys []renderKey, versions []store.ServerVersion, bodies [][]byte) (missing []int) {
	if c == nil {
		missing = make([]int, len(keys))
		for i := range missing {
			missing[i] = i
		}
		return missing
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.age()
	for i, k := range keys {
		if es := c.cur[k.id]; es != nil {
			if j := find(es, k.opts); j >= 0 && es[j].version == versions[i] {
				bodies[i] = es[j].body
				continue
			}
		}
		if es := c.old[k.id]; es != nil {
			if j := find(es, k.opts); j >= 0 && es[j].version == versions[i] {
				bodies[i] = es[j].body
				c.putLocked(k.id, es[j])
				continue
			}
		}
		missing = append(missing, i)
	}
	return missing
}

// store keeps body as the rendering of keys[i] at versions[i] for each i
// in idx, replacing what was kept for the key.
func (c *renderCache) store(keys []renderKey, versions []store.ServerVersion, bodies [][]byte, idx []int) {
	if c == nil || len(idx) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.age()
	for _, i := range idx {
		c.putLocked(keys[i].id, rendered{opts: keys[i].opts, version: versions[i], body: bodies[i]})
	}
}

// putLocked keeps e in the current generation (and no more in the old).
func (c *renderCache) putLocked(id string, e rendered) {
	if es := c.old[id]; es != nil {
		if j := find(es, e.opts); j >= 0 {
			if len(es) == 1 {
				delete(c.old, id)
			} else {
				c.old[id] = append(es[:j:j], es[j+1:]...)
			}
		}
	}
	es := c.cur[id]
	if j := find(es, e.opts); j >= 0 {
		c.curBytes -= size(id, es[j])
		es[j] = e
	} else {
		es = append(es, e)
		c.cur[id] = es
	}
	c.curBytes += size(id, e)
	if c.curBytes >= c.limit/2 {
		c.rotate(c.now())
	}
}
