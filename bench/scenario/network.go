package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"berth/bench/report"
	"berth/bench/stats"
)

// Network is scenario 6: TCP throughput between two sets on one host (6a)
// and across two hosts joined by VXLAN (6b), each against the same
// download between two network namespaces on a plain veth pair measured
// in between, and the rate a set achieves under flavor limits of 8, 32
// and 100 Mbit/s (6c). 6c runs before 6b: 6b adds two hosts to the
// stack's region.
func (e *Env) Network(ctx context.Context) error {
	sizeMB, reps := 256, 3
	if e.Quick {
		sizeMB, reps = 16, 1
	}
	veth, err := newVethPair(ctx, sizeMB)
	if err != nil {
		return fmt.Errorf("veth baseline: %w", err)
	}
	defer veth.close()
	if err := e.netSameHost(ctx, veth, sizeMB, reps); err != nil {
		return fmt.Errorf("6a: %w", err)
	}
	// 6b and 6c are independent: one failing still leaves the other's rows.
	var errs []error
	if err := e.NetLimits(ctx); err != nil {
		e.Report.Skip("6c achieved rate under 8/32/100 Mbit/s limits: failed: %v", err)
		errs = append(errs, fmt.Errorf("6c: %w", err))
	}
	if err := e.netAcrossHosts(ctx, veth, sizeMB, reps); err != nil {
		e.Report.Skip("6b throughput across two hosts: failed: %v", err)
		errs = append(errs, fmt.Errorf("6b: %w", err))
	}
	return errors.Join(errs...)
}

// netSameHost is 6a: two demo servers on the stack's host.
func (e *Env) netSameHost(ctx context.Context, veth *vethPair, sizeMB, reps int) error {
	var ids []string
	defer func() {
		for _, id := range ids {
			_ = e.deleteServer(ctx, id)
		}
		if len(ids) > 0 {
			_ = e.waitAllGone(ctx, len(ids), 2*time.Minute)
		}
	}()
	var apps []string
	var ips []string
	for i := range 2 {
		b, err := e.boot(ctx, fmt.Sprintf("%snet-%d", e.Prefix, i), nil)
		if err != nil {
			return err
		}
		ids = append(ids, b.ID)
		if _, err := e.waitActive(ctx, b.ID, 50*time.Millisecond, 2*time.Minute); err != nil {
			return err
		}
		s, err := e.getServer(ctx, b.ID)
		if err != nil {
			return err
		}
		app, err := e.appOf(ctx, b.ID)
		if err != nil {
			return err
		}
		ip := firstAddr(s.Addresses)
		if ip == "" {
			return fmt.Errorf("server %s: no address", b.ID)
		}
		apps, ips = append(apps, app), append(ips, ip)
	}
	if err := writePayload(ctx, e, apps[0], sizeMB); err != nil {
		return err
	}
	sets, pairs, err := e.downloads(ctx, apps[1], ips[0], sizeMB, reps, veth, "6a")
	if err != nil {
		return err
	}
	ss, ps := stats.Of(sets), stats.Of(pairs)
	e.Report.Add(report.Row{ID: "6a", Metric: fmt.Sprintf("TCP throughput set → set, one host (HTTP GET of %d MB)", sizeMB), Unit: "Mbit/s",
		Value: &ss, Baseline: "veth pair", BaselineValue: &ps, Ratio: stats.Ratio(ss.P50, ps.P50), Note: "ratio is throughput: below 1 is slower"})
	e.Report.Detail("network", map[string]any{"size_mb": sizeMB, "set_to_set_mbit": sets, "veth_mbit": pairs})
	e.Report.Note("Network (6a, 6b): busybox wget in one set downloads %d MB from busybox httpd in another set "+
		"(%d times; 6a on the stack's host through its OVS bridge, 6b across two hosts through VXLAN); the baseline is the "+
		"same two busybox programs (the host's, the same binary as the demo image's) in two network namespaces joined by "+
		"a veth pair, measured between the set downloads. Each time is that of a %d MB download minus that of a 2-byte one, "+
		"so process and exec start-up cancel out.", sizeMB, reps, sizeMB)
	return nil
}

// appOf is the app container of a set.
func (e *Env) appOf(ctx context.Context, setID string) (string, error) {
	cs, err := e.setContainers(ctx, setID)
	if err != nil {
		return "", err
	}
	for _, c := range cs {
		if c.Role == "app" {
			return c.ID, nil
		}
	}
	return "", fmt.Errorf("server %s has no app container", setID)
}

// firstAddr is a server's first address on any network.
func firstAddr(addrs map[string][]struct {
	Addr string `json:"addr"`
}) string {
	for _, as := range addrs {
		for _, a := range as {
			return a.Addr
		}
	}
	return ""
}

// writePayload puts the download files in a set's httpd root: "big" of
// sizeMB and the 2-byte "small".
func writePayload(ctx context.Context, e *Env, app string, sizeMB int) error {
	if _, err := e.execIn(ctx, app, "sh", "-c", fmt.Sprintf("dd if=/dev/zero of=/www/big bs=1048576 count=%d 2>/dev/null && echo x > /www/small", sizeMB)); err != nil {
		return fmt.Errorf("write payload: %w", err)
	}
	return nil
}

// downloads has the app container fetch big and small from the httpd at
// ip reps times, each followed by the same pair of downloads on the veth
// pair, and returns both throughputs in Mbit/s.
func (e *Env) downloads(ctx context.Context, app, ip string, sizeMB, reps int, veth *vethPair, tag string) (sets, pairs []float64, err error) {
	for i := range reps {
		small, err := e.execIn(ctx, app, "wget", "-q", "-O", "/dev/null", "http://"+ip+"/small")
		if err != nil {
			return nil, nil, err
		}
		big, err := e.execIn(ctx, app, "wget", "-q", "-O", "/dev/null", "http://"+ip+"/big")
		if err != nil {
			return nil, nil, err
		}
		sets = append(sets, mbit(sizeMB, big-small))
		vs, err := veth.get(ctx, "small")
		if err != nil {
			return nil, nil, err
		}
		vb, err := veth.get(ctx, "big")
		if err != nil {
			return nil, nil, err
		}
		pairs = append(pairs, mbit(sizeMB, vb-vs))
		e.Log.Info("network sample", "row", tag, "i", i, "set_to_set_mbit", fmt.Sprintf("%.0f", sets[i]), "veth_mbit", fmt.Sprintf("%.0f", pairs[i]))
	}
	return sets, pairs, nil
}

func mbit(mb int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(mb) * 8 * 1.048576 / d.Seconds()
}

// execIn runs a command in a container and returns how long it took (from
// exec create to exit, as seen from the host).
func (e *Env) execIn(ctx context.Context, id string, cmd ...string) (time.Duration, error) {
	t := time.Now()
	ex, err := e.Docker.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, err
	}
	att, err := e.Docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, err
	}
	var out bytes.Buffer
	_, _ = out.ReadFrom(att.Reader)
	att.Close()
	took := time.Since(t)
	for {
		st, err := e.Docker.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return 0, err
		}
		if !st.Running {
			if st.ExitCode != 0 {
				return 0, fmt.Errorf("%s in %.12s: exit %d: %.300s", strings.Join(cmd, " "), id, st.ExitCode, out.String())
			}
			return took, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// vethPair is two network namespaces joined by a veth pair, busybox httpd
// serving a directory in the first.
type vethPair struct {
	nsA, nsB, dir string
	httpd         *exec.Cmd
}

func newVethPair(ctx context.Context, sizeMB int) (*vethPair, error) {
	sfx := fmt.Sprintf("%d", os.Getpid()%100000)
	v := &vethPair{nsA: "bbn-a" + sfx, nsB: "bbn-b" + sfx}
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	va, vb := "bbva"+sfx, "bbvb"+sfx
	for _, c := range [][]string{
		{"ip", "netns", "add", v.nsA}, {"ip", "netns", "add", v.nsB},
		{"ip", "link", "add", va, "type", "veth", "peer", "name", vb},
		{"ip", "link", "set", va, "netns", v.nsA}, {"ip", "link", "set", vb, "netns", v.nsB},
		{"ip", "-n", v.nsA, "addr", "add", "10.254.77.1/24", "dev", va}, {"ip", "-n", v.nsB, "addr", "add", "10.254.77.2/24", "dev", vb},
		{"ip", "-n", v.nsA, "link", "set", va, "up"}, {"ip", "-n", v.nsB, "link", "set", vb, "up"},
		{"ip", "-n", v.nsA, "link", "set", "lo", "up"}, {"ip", "-n", v.nsB, "link", "set", "lo", "up"},
	} {
		if err := run(c...); err != nil {
			v.close()
			return nil, err
		}
	}
	var err error
	if v.dir, err = os.MkdirTemp("", "berth-bench-www-"); err != nil {
		v.close()
		return nil, err
	}
	if err := run("dd", "if=/dev/zero", "of="+filepath.Join(v.dir, "big"), "bs=1048576", fmt.Sprintf("count=%d", sizeMB)); err != nil {
		v.close()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(v.dir, "small"), []byte("x\n"), 0o644); err != nil {
		v.close()
		return nil, err
	}
	v.httpd = exec.Command("ip", "netns", "exec", v.nsA, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", v.dir)
	if err := v.httpd.Start(); err != nil {
		v.close()
		return nil, err
	}
	for range 50 { // until httpd answers
		if _, err := v.get(ctx, "small"); err == nil {
			return v, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.close()
	return nil, fmt.Errorf("busybox httpd in %s does not answer", v.nsA)
}

func (v *vethPair) get(ctx context.Context, file string) (time.Duration, error) {
	t := time.Now()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", v.nsB, "/bin/busybox", "wget", "-q", "-O", "/dev/null",
		"http://10.254.77.1/"+file).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wget in %s: %v: %s", v.nsB, err, out)
	}
	return time.Since(t), nil
}

func (v *vethPair) close() {
	if v.httpd != nil && v.httpd.Process != nil {
		_ = v.httpd.Process.Kill()
		_ = v.httpd.Wait()
	}
	for _, ns := range []string{v.nsA, v.nsB} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	if v.dir != "" {
		os.RemoveAll(v.dir)
	}
}
