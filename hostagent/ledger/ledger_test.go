package ledger

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLedgerSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "applied.json")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Applied("a"); got != 0 {
		t.Errorf("Applied(a) on empty ledger = %d, want 0", got)
	}
	for _, step := range []struct {
		id  string
		gen int64
	}{{"a", 3}, {"b", 7}, {"a", 4}} {
		if err := l.SetApplied(step.id, step.gen); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Forget("b"); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := l2.Applied("a"); got != 4 {
		t.Errorf("reopened Applied(a) = %d, want 4", got)
	}
	if got := l2.Applied("b"); got != 0 {
		t.Errorf("reopened Applied(b) = %d, want 0 (forgotten)", got)
	}
}

func TestInMemoryLedger(t *testing.T) {
	l, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetApplied("a", 2); err != nil {
		t.Fatal(err)
	}
	if got := l.Applied("a"); got != 2 {
		t.Errorf("Applied(a) = %d, want 2", got)
	}
}

func TestEntriesAndOldFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "applied.json")
	if err := os.WriteFile(path, []byte(`{"old":5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Get("old"); got.Generation != 5 || got.RebootSeq != 0 {
		t.Errorf("old-format entry = %+v, want generation 5", got)
	}
	want := Entry{Generation: 2, RebootSeq: 3, Restarts: map[string]Restarts{"app": {Count: 4, Streak: 1}}}
	if err := l.Put("new", want); err != nil {
		t.Fatal(err)
	}
	got := l.Get("new")
	got.Restarts["app"] = Restarts{} // a copy: must not change the ledger
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := l2.Get("new"); !got.Equal(want) {
		t.Errorf("reopened entry = %+v, want %+v", got, want)
	}
	if got := l2.Get("old"); got.Generation != 5 {
		t.Errorf("reopened old entry = %+v, want generation 5", got)
	}
}
