// Package blobtest is the contract every blob.Store driver must meet. Each
// driver's tests call RunStoreSuite with a constructor for an empty store.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"berth/imagesvc/blob"
)

// RunStoreSuite runs the blob.Store contract against stores made by newStore.
func RunStoreSuite(t *testing.T, newStore func(t *testing.T) blob.Store) {
	ctx := context.Background()

	t.Run("PutGetStatDelete", func(t *testing.T) {
		s := newStore(t)
		data := bytes.Repeat([]byte("berth"), 100000)
		info, err := s.Put(ctx, "images/a", bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if info.Size != int64(len(data)) {
			t.Errorf("Put size: got %d, want %d", info.Size, len(data))
		}
		st, err := s.Stat(ctx, "images/a")
		if err != nil || st.Size != int64(len(data)) {
			t.Errorf("Stat: got %+v, %v; want size %d", st, err, len(data))
		}
		rc, gi, err := s.Get(ctx, "images/a")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || gi.Size != int64(len(data)) {
			t.Errorf("Get: got %d bytes (info size %d), err %v; want the %d bytes put", len(got), gi.Size, err, len(data))
		}
		if err := s.Delete(ctx, "images/a"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Stat(ctx, "images/a"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after Delete: got %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "images/a"); err != nil {
			t.Errorf("second Delete: got %v, want nil", err)
		}
	})

	t.Run("MissingKey", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.Get(ctx, "images/none"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get: got %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "images/none"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat: got %v, want ErrNotFound", err)
		}
	})

	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		boom := errors.New("client went away")
		r := io.MultiReader(strings.NewReader("partial data"), errReader{boom})
		if _, err := s.Put(ctx, "images/b", r); !errors.Is(err, boom) {
			t.Fatalf("Put: got %v, want it to wrap the reader's error", err)
		}
		if _, err := s.Stat(ctx, "images/b"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after failed Put: got %v, want ErrNotFound", err)
		}
	})

	t.Run("FailedPutKeepsOldBlob", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(ctx, "images/c", strings.NewReader("old")); err != nil {
			t.Fatal(err)
		}
		r := io.MultiReader(strings.NewReader("new but broken"), errReader{io.ErrUnexpectedEOF})
		if _, err := s.Put(ctx, "images/c", r); err == nil {
			t.Fatal("Put with a failing reader succeeded")
		}
		rc, _, err := s.Get(ctx, "images/c")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, _ := io.ReadAll(rc); string(got) != "old" {
			t.Errorf("after a failed overwrite got %q, want %q", got, "old")
		}
	})

	t.Run("CanceledPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, "images/d", strings.NewReader("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: got %v, want context.Canceled", err)
		}
		if _, err := s.Stat(ctx, "images/d"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat: got %v, want ErrNotFound", err)
		}
	})

	t.Run("WriterCommit", func(t *testing.T) {
		s := newStore(t)
		w, err := s.NewWriter(ctx)
		if err != nil {
			t.Fatalf("NewWriter: %v", err)
		}
		defer w.Discard()
		for i := 0; i < 3; i++ {
			if _, err := w.Write([]byte("chunk-")); err != nil {
				t.Fatal(err)
			}
		}
		if w.Size() != 18 {
			t.Errorf("Size: got %d, want 18", w.Size())
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.Stat(ctx, "sha256/ab/x"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat before Commit: got %v, want ErrNotFound", err)
		}
		info, err := w.Commit(ctx, "sha256/ab/x")
		if err != nil || info.Size != 18 {
			t.Fatalf("Commit: got %+v, %v", info, err)
		}
		if err := w.Discard(); err != nil {
			t.Errorf("Discard after Commit: %v", err)
		}
		rc, _, err := s.Get(ctx, "sha256/ab/x")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != "chunk-chunk-chunk-" {
			t.Errorf("committed blob: got %q", got)
		}
	})

	t.Run("WriterDiscardLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		w, err := s.NewWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("never committed"))
		if err := w.Discard(); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if _, err := w.Commit(ctx, "k/discarded"); err == nil {
			t.Error("Commit after Discard succeeded")
		}
		if _, err := s.Stat(ctx, "k/discarded"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat: got %v, want ErrNotFound", err)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"", "../x", "a//b", "/abs", "a/./b", "sp ace", "a/.."} {
			if _, err := s.Put(ctx, k, strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Put(%q): got %v, want ErrInvalidKey", k, err)
			}
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
