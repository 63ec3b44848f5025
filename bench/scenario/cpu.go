package scenario

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"berth/internal/devstack"
)

// clkTck is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clkTck = 100

// cpuSnap is CPU time consumed so far: by the whole machine (busy and
// total jiffies from /proc/stat) and by named processes, in seconds.
type cpuSnap struct {
	busy, total float64
	procs       map[string]float64
}

// procStat is one /proc/PID/stat: parent, command and CPU times (own and
// of reaped children) in seconds.
type procStat struct {
	pid, ppid   int
	comm        string
	cpu, reaped float64
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(s[close+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("short stat for %d", pid)
	}
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
	ppid, _ := strconv.Atoi(f[1])
	return procStat{pid: pid, ppid: ppid, comm: s[open+1 : close],
		cpu: (num(11) + num(12)) / clkTck, reaped: (num(13) + num(14)) / clkTck}, nil
}

func allProcs() []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ps, err := readProcStat(pid); err == nil {
			out = append(out, ps)
		}
	}
	return out
}

// treeCPU is the CPU of root, its reaped children and its live
// descendants.
func treeCPU(procs []procStat, root int) float64 {
	kids := map[int][]procStat{}
	var self *procStat
	for i := range procs {
		kids[procs[i].ppid] = append(kids[procs[i].ppid], procs[i])
		if procs[i].pid == root {
			self = &procs[i]
		}
	}
	if self == nil {
		return 0
	}
	var walk func(p procStat) float64
	walk = func(p procStat) float64 {
		t := p.cpu + p.reaped
		for _, k := range kids[p.pid] {
			t += walk(k)
		}
		return t
	}
	return walk(*self)
}

// snapCPU reads the machine's and the interesting processes' CPU: the
// stack's services (process trees), extra PIDs by name, the bench itself,
// and Docker's daemons by command name.
func (e *Env) snapCPU(extra map[string]int) cpuSnap {
	s := cpuSnap{procs: map[string]float64{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			s.total += x
			if i != 3 && i != 4 { // idle, iowait
				s.busy += x
			}
		}
	}
	procs := allProcs()
	for _, name := range []string{devstack.ServiceRegion, devstack.ServiceHostAgent, devstack.ServiceImage, devstack.ServicePostgres, devstack.ServiceKeystone} {
		if p := e.Stack.Service(name); p != nil && p.PID() > 0 {
			s.procs[name] = treeCPU(procs, p.PID())
		}
	}
	for name, pid := range extra {
		s.procs[name] = treeCPU(procs, pid)
	}
	if self, err := readProcStat(os.Getpid()); err == nil {
		s.procs["bench"] = self.cpu // its own threads only: the stack is its child too
	}
	for _, p := range procs {
		switch {
		case p.comm == "dockerd":
			s.procs["dockerd"] += p.cpu + p.reaped
		case p.comm == "containerd" || strings.HasPrefix(p.comm, "containerd-shim"):
			s.procs["containerd+shims"] += p.cpu + p.reaped
		}
	}
	return s
}

// cpuUse is what happened between two snapshots.
type cpuUse struct {
	// Busy is the share of the machine's CPU time that was busy, 0-1.
	Busy float64 `json:"busy"`
	// Cores is how many cores' worth the machine had over the period.
	Seconds map[string]float64 `json:"cpu_seconds"`
}

func (a cpuSnap) to(b cpuSnap) cpuUse {
	u := cpuUse{Seconds: map[string]float64{}}
	if d := b.total - a.total; d > 0 {
		u.Busy = (b.busy - a.busy) / d
	}
	for k, v := range b.procs {
		if d := v - a.procs[k]; d > 0.005 {
			u.Seconds[k] = d
		}
	}
	return u
}

// String lists the busiest processes, e.g. "machine 97% busy: dockerd
// 31.2 s, hostagent 8.1 s".
func (u cpuUse) String() string {
	type kv struct {
		k string
		v float64
	}
	var xs []kv
	for k, v := range u.Seconds {
		xs = append(xs, kv{k, v})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].v > xs[j].v })
	parts := make([]string, 0, len(xs))
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%s %.1f s", x.k, x.v))
	}
	return fmt.Sprintf("machine %.0f%% busy; CPU: %s", u.Busy*100, strings.Join(parts, ", "))
}
