package compute

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/gorilla/mux"

	"berth/internal/httpx"
	"berth/region/store"
	"berth/schema"
)

// The bodies of GET /servers/detail and GET /servers/{id} are assembled
// from each server's JSON, taken from the render cache where the server's
// version (read by the query that finds it) matches, else rendered from
// its row and kept. The bytes are those encoding/json writes for the
// same values (httpx.WriteJSON): map keys sorted, a newline at the end.

// listServerPage answers a server list: the servers f selects (none when
// f is nil), with their details or only id, name and links.
func (a *API) listServerPage(w http.ResponseWriter, r *http.Request, detail bool, f *store.ServerFilter, limit int, q url.Values) error {
	if !detail {
		var stamps []store.ServerStamp
		if f != nil {
			var err error
			if stamps, _, err = a.cfg.Store.ListServerStamps(r.Context(), *f, store.StampName, nil); err != nil {
				return err
			}
		}
		base := a.baseURL(r)
		out := make([]schema.ServerBrief, len(stamps))
		for i, s := range stamps {
			out[i] = schema.ServerBrief{ID: s.ID, Name: s.Name, Links: serverLinksAt(base, s.ID)}
		}
		body := map[string]any{"servers": out}
		if limit > 0 && len(stamps) == limit {
			body["servers_links"] = nextLink(base, r.URL.Path, q, stamps[len(stamps)-1].ID)
		}
		httpx.WriteJSON(w, http.StatusOK, body)
		return nil
	}
	buf, err := a.buildServerPage(r, f, limit, q)
	if err != nil {
		return err
	}
	defer putBuffer(buf)
	writeJSONBytes(w, buf.Bytes())
	return nil
}

// buildServerPage is the body of a detailed list, in a buffer to put back
// (putBuffer). Only so many are built at once (API.pages); the caller
// writes the answer, which waits on the client, after.
func (a *API) buildServerPage(r *http.Request, f *store.ServerFilter, limit int, q url.Values) (*bytes.Buffer, error) {
	select {
	case a.pages <- struct{}{}:
		defer func() { <-a.pages }()
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	v := a.viewerOf(r)
	var p page
	var stamps []store.ServerStamp
	if f != nil {
		var rows map[string]*store.Server
		var err error
		text := store.StampNothing
		if v.status != nil {
			text = store.StampHost
		}
		stamps, rows, err = a.cfg.Store.ListServerStamps(r.Context(), *f, text, func(st []store.ServerStamp) []int {
			return p.lookup(a.renders, v, st)
		})
		if err != nil {
			return nil, err
		}
		if err := p.render(a.renders, rows); err != nil {
			return nil, err
		}
	}
	buf := getBuffer()
	buf.WriteString(`{"servers":[`)
	sep := false
	for _, b := range p.bodies {
		if b == nil {
			continue
		}
		if sep {
			buf.WriteByte(',')
		}
		buf.Write(b)
		sep = true
	}
	buf.WriteByte(']')
	if limit > 0 && len(stamps) == limit {
		links, err := json.Marshal(nextLink(v.opts.base, r.URL.Path, q, stamps[len(stamps)-1].ID))
		if err != nil {
			putBuffer(buf)
			return nil, err
		}
		buf.WriteString(`,"servers_links":`)
		buf.Write(links)
	}
	buf.WriteString("}\n")
	return buf, nil
}

func (a *API) showServer(w http.ResponseWriter, r *http.Request) error {
	v := a.viewerOf(r)
	var p page
	_, srv, err := a.cfg.Store.FindServerStamped(r.Context(), caller(r).Scope, mux.Vars(r)["id"], func(st store.ServerStamp) bool {
		return len(p.lookup(a.renders, v, []store.ServerStamp{st})) > 0
	})
	if err != nil {
		return err
	}
	if err := p.render(a.renders, map[string]*store.Server{p.keys[0].id: srv}); err != nil {
		return err
	}
	buf := getBuffer()
	defer putBuffer(buf)
	buf.WriteString(`{"server":`)
	buf.Write(p.bodies[0])
	buf.WriteString("}\n")
	writeJSONBytes(w, buf.Bytes())
	return nil
}

// page is the servers of one answer, in order: their cache keys and
// versions, their bodies, and which of those are still to render.
type page struct {
	keys     []renderKey
	versions []store.ServerVersion
	bodies   [][]byte
	missing  []int
}

// lookup takes the bodies of stamps from the cache and returns the
// indexes of those it lacks. It does no I/O (it runs while the store
// holds a connection), and may run again if the store retries.
func (p *page) lookup(c *renderCache, v viewer, stamps []store.ServerStamp) []int {
	p.keys = make([]renderKey, len(stamps))
	p.versions = make([]store.ServerVersion, len(stamps))
	p.bodies = make([][]byte, len(stamps))
	for i := range stamps {
		p.keys[i] = renderKey{id: stamps[i].ID, opts: v.optsFor(stamps[i].Host)}
		p.versions[i] = stamps[i].Version
	}
	p.missing = c.lookup(p.keys, p.versions, p.bodies)
	return p.missing
}

// render renders the missing bodies from rows (by id) and keeps them. A
// server without a row (deleted since it was listed) keeps a nil body
// and is left out of the answer.
func (p *page) render(c *renderCache, rows map[string]*store.Server) error {
	done := p.missing[:0:0]
	for _, i := range p.missing {
		srv := rows[p.keys[i].id]
		if srv == nil {
			continue
		}
		b, err := json.Marshal(renderServer(p.keys[i].opts, srv))
		if err != nil {
			return err
		}
		p.bodies[i] = b
		done = append(done, i)
	}
	c.store(p.keys, p.versions, p.bodies, done)
	return nil
}

func writeJSONBytes(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// Answer buffers are reused: a page of 1,000 servers is ~1.3 MB.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 8<<20 {
		return
	}
	b.Reset()
	buffers.Put(b)
}
