package compute

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"berth/region/store"
)

// clock is a settable time for the cache's generations.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func key(i int, o viewOpts) renderKey { return renderKey{id: fmt.Sprintf("%036d", i), opts: o} }

// get looks one body up.
func get(c *renderCache, k renderKey, v store.ServerVersion) []byte {
	var b [1][]byte
	c.lookup([]renderKey{k}, []store.ServerVersion{v}, b[:])
	return b[0]
}

func put(c *renderCache, k renderKey, v store.ServerVersion, body []byte) {
	c.store([]renderKey{k}, []store.ServerVersion{v}, [][]byte{body}, []int{0})
}

func TestRenderCacheVersionsAndOptions(t *testing.T) {
	clk := &clock{time.Unix(1e9, 0)}
	c := newRenderCache(1<<20, time.Minute, clk.now)
	member := viewOpts{base: "http://a", mv: Microversion{2, 1}}
	admin := viewOpts{base: "http://a", mv: Microversion{2, 1}, admin: true}
	v1, v2 := store.ServerVersion{Row: 10}, store.ServerVersion{Row: 11}
	put(c, key(1, member), v1, []byte("member@10"))
	put(c, key(1, admin), v1, []byte("admin@10"))
	for _, tc := range []struct {
		name string
		k    renderKey
		v    store.ServerVersion
		want string
	}{
		{"same version and options", key(1, member), v1, "member@10"},
		{"other options", key(1, admin), v1, "admin@10"},
		{"newer row", key(1, member), v2, ""},
		{"renames since", key(1, member), store.ServerVersion{Row: 10, Names: 1}, ""},
		{"other base URL", key(1, viewOpts{base: "https://a", mv: Microversion{2, 1}}), v1, ""},
		{"other microversion", key(1, viewOpts{base: "http://a", mv: Microversion{2, 9}}), v1, ""},
		{"other host status", key(1, viewOpts{base: "http://a", mv: Microversion{2, 16}, admin: true, hostStatus: "DOWN"}), v1, ""},
		{"other server", key(2, member), v1, ""},
	} {
		if got := string(get(c, tc.k, tc.v)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	// A newer rendering replaces the older one for the same options only.
	put(c, key(1, member), v2, []byte("member@11"))
	if got := string(get(c, key(1, member), v2)); got != "member@11" {
		t.Errorf("after re-render: got %q, want member@11", got)
	}
	if got := get(c, key(1, member), v1); got != nil {
		t.Errorf("old version still served: %q", got)
	}
	if got := string(get(c, key(1, admin), v1)); got != "admin@10" {
		t.Errorf("admin body after member re-render: got %q, want admin@10", got)
	}
}

func TestRenderCacheBoundedAndAged(t *testing.T) {
	clk := &clock{time.Unix(1e9, 0)}
	const limit = 100 << 10
	c := newRenderCache(limit, 10*time.Minute, clk.now)
	o := viewOpts{base: "http://a", mv: Microversion{2, 1}}
	body := bytes.Repeat([]byte("x"), 1000)
	v := store.ServerVersion{Row: 1}
	bytesHeld := func() int {
		n := 0
		for _, m := range []map[string][]rendered{c.cur, c.old} {
			for id, es := range m {
				for _, e := range es {
					n += size(id, e)
				}
			}
		}
		return n
	}
	for i := range 1000 {
		put(c, key(i, o), v, body)
		if n := bytesHeld(); n > limit {
			t.Fatalf("after %d bodies the cache holds %d bytes, over its limit %d", i+1, n, limit)
		}
	}
	// The most recent bodies stay; the oldest went.
	if get(c, key(999, o), v) == nil || get(c, key(0, o), v) != nil {
		t.Errorf("after 1,000 bodies of 1 KB in 100 KB: newest kept %v, oldest dropped %v",
			get(c, key(999, o), v) != nil, get(c, key(0, o), v) == nil)
	}
	// A body read stays through a turn of generations; one not read goes
	// after two.
	c = newRenderCache(limit, 10*time.Minute, clk.now)
	put(c, key(1, o), v, body)
	put(c, key(2, o), v, body)
	clk.t = clk.t.Add(6 * time.Minute)
	if get(c, key(1, o), v) == nil {
		t.Fatal("body gone after one generation")
	}
	clk.t = clk.t.Add(6 * time.Minute)
	if get(c, key(1, o), v) == nil {
		t.Error("a body read each generation was dropped")
	}
	if get(c, key(2, o), v) != nil {
		t.Error("a body not read for two generations is still served")
	}
	// Nothing survives maxAge unread, even with no lookups meanwhile.
	clk.t = clk.t.Add(11 * time.Minute)
	if get(c, key(1, o), v) != nil {
		t.Error("a body unread for longer than maxAge is still served")
	}
}

func TestRenderCacheOff(t *testing.T) {
	c := newRenderCache(-1, time.Minute, time.Now)
	put(c, key(1, viewOpts{}), store.ServerVersion{}, []byte("x"))
	if got := get(c, key(1, viewOpts{}), store.ServerVersion{}); got != nil {
		t.Errorf("a disabled cache served %q", got)
	}
}
