// Package ledger remembers, per set, what the agent last applied: the
// desired generation, the reboot sequence and the restarts its restart
// policies made, in one small JSON file so that it survives agent restarts.
package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// Entry is what was applied to one set.
type Entry struct {
	// Generation is the desired generation last applied.
	Generation int64 `json:"generation"`
	// RebootSeq is the desired RebootSeq last applied.
	RebootSeq int64 `json:"reboot_seq,omitempty"`
	// Restarts are the policy restarts per member name.
	Restarts map[string]Restarts `json:"restarts,omitempty"`
}

// Restarts counts one member's policy restarts.
type Restarts struct {
	// Count is every restart the agent made.
	Count int `json:"count"`
	// Streak counts restarts in a row after short runs; it sets the
	// backoff before the next one and resets after a long run.
	Streak int `json:"streak,omitempty"`
}

// UnmarshalJSON also reads the first format, a bare generation number.
func (e *Entry) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] != '{' {
		return json.Unmarshal(b, &e.Generation)
	}
	type plain Entry
	return json.Unmarshal(b, (*plain)(e))
}

// Clone returns a deep copy.
func (e Entry) Clone() Entry {
	e.Restarts = maps.Clone(e.Restarts)
	return e
}

// Equal reports whether two entries hold the same values.
func (e Entry) Equal(o Entry) bool {
	return e.Generation == o.Generation && e.RebootSeq == o.RebootSeq && maps.Equal(e.Restarts, o.Restarts)
}

// Ledger is a file-backed map of set ID to Entry. The zero path keeps it
// in memory only.
type Ledger struct {
	path    string
	mu      sync.Mutex
	entries map[string]Entry
}

// Open loads the ledger at path (a missing file is an empty ledger);
// path "" gives an in-memory ledger.
func Open(path string) (*Ledger, error) {
	l := &Ledger{path: path, entries: map[string]Entry{}}
	if path == "" {
		return l, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	if err := json.Unmarshal(b, &l.entries); err != nil {
		return nil, fmt.Errorf("parse ledger %s: %w", path, err)
	}
	return l, nil
}

// Get returns what was applied to a set (the zero Entry if unknown).
func (l *Ledger) Get(setID string) Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries[setID].Clone()
}

// Put records what was applied to a set.
func (l *Ledger) Put(setID string, e Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.entries[setID]; ok && old.Equal(e) {
		return nil
	}
	l.entries[setID] = e.Clone()
	return l.saveLocked()
}

// Applied returns the last applied generation of a set, 0 if unknown.
func (l *Ledger) Applied(setID string) int64 { return l.Get(setID).Generation }

// SetApplied records the applied generation of a set.
func (l *Ledger) SetApplied(setID string, gen int64) error {
	e := l.Get(setID)
	e.Generation = gen
	return l.Put(setID, e)
}

// Forget drops a set.
func (l *Ledger) Forget(setID string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.entries[setID]; !ok {
		return nil
	}
	delete(l.entries, setID)
	return l.saveLocked()
}

// saveLocked writes the file atomically (temp file, fsync, rename).
func (l *Ledger) saveLocked() error {
	if l.path == "" {
		return nil
	}
	b, err := json.Marshal(l.entries)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(l.path), ".ledger-*")
	if err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := os.Rename(tmp.Name(), l.path); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	return nil
}
