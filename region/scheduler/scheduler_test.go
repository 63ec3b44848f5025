package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func host(name string, vcpus, memMB, usedMB int, beat time.Time) HostState {
	return HostState{Name: name, VCPUs: vcpus, MemoryMB: memMB, DiskGB: 100, CPURatio: 1, RAMRatio: 1,
		DiskRatio: 1, MemoryMBUsed: usedMB, LastHeartbeat: beat}
}

func TestRank(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	fresh, stale := now.Add(-5*time.Second), now.Add(-5*time.Minute)
	tests := []struct {
		name     string
		hosts    []HostState
		req      Request
		want     []string
		rejected map[string]int
	}{
		{
			name:  "spreads by free RAM, name breaks ties",
			hosts: []HostState{host("b", 4, 4096, 0, fresh), host("a", 4, 4096, 0, fresh), host("c", 4, 8192, 0, fresh)},
			req:   Request{VCPUs: 1, MemoryMB: 512, Now: now, Grace: time.Minute},
			want:  []string{"c", "a", "b"}, rejected: map[string]int{},
		},
		{
			name:  "skips full and down hosts",
			hosts: []HostState{host("full", 4, 1024, 1000, fresh), host("down", 4, 8192, 0, stale), host("ok", 4, 2048, 0, fresh)},
			req:   Request{VCPUs: 1, MemoryMB: 512, Now: now, Grace: time.Minute},
			want:  []string{"ok"}, rejected: map[string]int{"not enough RAM": 1, "down": 1},
		},
		{
			name:  "forced host only",
			hosts: []HostState{host("a", 4, 4096, 0, fresh), host("b", 4, 8192, 0, fresh)},
			req:   Request{VCPUs: 1, MemoryMB: 512, ForceHost: "a", Now: now, Grace: time.Minute},
			want:  []string{"a"}, rejected: map[string]int{"not the forced host": 1},
		},
		{
			name:  "overcommit ratio counts",
			hosts: []HostState{{Name: "r", VCPUs: 2, CPURatio: 16, MemoryMB: 1000, RAMRatio: 1.5, DiskGB: 10, DiskRatio: 1, VCPUsUsed: 31, LastHeartbeat: fresh}},
			req:   Request{VCPUs: 2, MemoryMB: 1500, Now: now, Grace: time.Minute},
			want:  []string{}, rejected: map[string]int{"not enough vCPUs": 1},
		},
		{
			name: "no hosts",
			req:  Request{VCPUs: 1, MemoryMB: 1},
			want: []string{}, rejected: map[string]int{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rejected := Rank(tt.hosts, tt.req)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Rank() hosts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.rejected, rejected); diff != "" {
				t.Errorf("Rank() rejected (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyGroup(t *testing.T) {
	ranked := []string{"a", "b", "c"}
	tests := []struct {
		policy  string
		members map[string]int
		want    []string
	}{
		{Affinity, nil, []string{"a", "b", "c"}},
		{Affinity, map[string]int{"b": 2}, []string{"b"}},
		{AntiAffinity, map[string]int{"a": 1, "c": 1}, []string{"b"}},
		{AntiAffinity, map[string]int{"a": 1, "b": 1, "c": 1}, []string{}},
		{SoftAffinity, map[string]int{"c": 1}, []string{"c", "a", "b"}},
		{SoftAntiAffinity, map[string]int{"a": 2, "b": 1}, []string{"c", "b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ApplyGroup(ranked, tt.policy, tt.members)); diff != "" {
				t.Errorf("ApplyGroup(%s, %v) (-want +got):\n%s", tt.policy, tt.members, diff)
			}
		})
	}
}

// TestRankManyHosts checks the partial selection: with more passing hosts
// than Best, the first Best are the heaviest in order and every passing
// host is still a candidate.
func TestRankManyHosts(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var hosts []HostState
	for i := range 200 {
		// Free RAM is a permutation of 0..199 GB-ish, so the order is known.
		free := (i * 37) % 200
		hosts = append(hosts, host(fmt.Sprintf("h%03d", i), 4, 1024*(free+1), 0, now))
	}
	hosts = append(hosts, host("full", 4, 1024, 1024, now))
	got, rejected := Rank(hosts, Request{VCPUs: 1, MemoryMB: 512, Now: now, Grace: time.Minute})
	if len(got) != 200 || rejected["not enough RAM"] != 1 {
		t.Fatalf("got %d candidates, rejected %v; want 200 and the full host rejected", len(got), rejected)
	}
	byName := map[string]HostState{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	for i := 0; i < Best; i++ {
		if want := 1024 * (200 - i); byName[got[i]].MemoryMB != want {
			t.Errorf("candidate %d is %s with %d MB, want the host with %d MB", i, got[i], byName[got[i]].MemoryMB, want)
		}
	}
	seen := map[string]bool{}
	for _, n := range got {
		if seen[n] {
			t.Errorf("%s listed twice", n)
		}
		seen[n] = true
	}
}

// TestGroupPick checks GroupPick against ApplyGroup: for every policy it
// picks the first host of ApplyGroup's order that skip leaves, and
// max_server_per_host lets anti-affinity stack up to its limit.
func TestGroupPick(t *testing.T) {
	ranked := []string{"a", "b", "c", "d"}
	members := []map[string]int{{}, {"a": 1}, {"c": 2, "b": 1}, {"a": 1, "b": 1, "c": 1, "d": 1}}
	skips := map[string]func(string) bool{
		"none": func(string) bool { return false },
		"a":    func(h string) bool { return h == "a" },
		"b, c": func(h string) bool { return h == "b" || h == "c" },
	}
	for _, policy := range []string{"", Affinity, AntiAffinity, SoftAffinity, SoftAntiAffinity} {
		for _, m := range members {
			for name, skip := range skips {
				want, wantOK := "", false
				for _, h := range ApplyGroup(ranked, policy, m) {
					if !skip(h) {
						want, wantOK = h, true
						break
					}
				}
				if got, ok := GroupPick(ranked, policy, 0, m, skip); got != want || ok != wantOK {
					t.Errorf("GroupPick(%q, members %v, skip %s) = %q, %v; want %q, %v", policy, m, name, got, ok, want, wantOK)
				}
			}
		}
	}
	two := map[string]int{"a": 2, "b": 1}
	if got, _ := GroupPick(ranked, AntiAffinity, 2, two, skips["none"]); got != "b" {
		t.Errorf("anti-affinity with 2 per host over %v picked %q, want b", two, got)
	}
}

// TestRankFirst checks that walking hosts in weight order gives Rank's
// best candidates, and all of them with the rejections when it walks
// every host.
func TestRankFirst(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var hosts []HostState
	for i := range 100 {
		hosts = append(hosts, host(fmt.Sprintf("h%03d", i), 4, 1024*(1+(i*37)%100), 0, now))
	}
	hosts = append(hosts, host("full", 4, 1024, 1024, now), host("down", 4, 1<<20, 0, now.Add(-time.Hour)))
	order := make([]int, len(hosts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if Heavier(&hosts[a], &hosts[b]) {
			return -1
		}
		return 1
	})
	req := Request{VCPUs: 1, MemoryMB: 512, Now: now, Grace: time.Minute}
	want, wantRejected := Rank(hosts, req)
	got, _, complete := RankFirst(hosts, order, req, Best)
	if complete || !slices.Equal(got, want[:Best]) {
		t.Errorf("first %d: %v (complete %v), want %v and not complete", Best, got, complete, want[:Best])
	}
	all, rejected, complete := RankFirst(hosts, order, req, len(hosts))
	if !complete || len(all) != len(want) || !cmp.Equal(rejected, wantRejected) {
		t.Errorf("all: %d names, rejected %v, complete %v; want %d, %v, complete", len(all), rejected, complete, len(want), wantRejected)
	}
}
