package api

import (
	"context"
	"sync"
	"time"

	"berth/imagesvc/store"
	"berth/internal/keystone"
)

// projectNotes records the project names callers' tokens carry (the
// registry resolves "<project name>/<repository>" with them), at most
// once per project per noteEvery.
type projectNotes struct {
	st   *store.Store
	mu   sync.Mutex
	seen map[string]time.Time // project id → when noted
}

const noteEvery = 10 * time.Minute

func newProjectNotes(st *store.Store) *projectNotes {
	return &projectNotes{st: st, seen: map[string]time.Time{}}
}

// note remembers id's project (errors are only logged by the caller's
// next note; a missed note costs nothing but a later lookup).
func (p *projectNotes) note(ctx context.Context, id *keystone.Identity) {
	if p == nil || p.st == nil || id.ProjectID == "" || id.ProjectName == "" {
		return
	}
	key := id.ProjectID + "\x00" + id.ProjectName
	p.mu.Lock()
	last, ok := p.seen[key]
	if ok && time.Since(last) < noteEvery {
		p.mu.Unlock()
		return
	}
	if len(p.seen) > 100000 {
		p.seen = map[string]time.Time{}
	}
	p.seen[key] = time.Now()
	p.mu.Unlock()
	_ = p.st.NoteProject(ctx, store.Project{ID: id.ProjectID, Name: id.ProjectName, DomainID: id.DomainID})
}
