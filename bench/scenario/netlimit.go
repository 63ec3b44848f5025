package scenario

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"golang.org/x/sync/errgroup"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
)

// limitedSet is one server of 6c: booted with a flavor whose extra specs
// limit it to mbit in both directions (mbit 0: m1.tiny, unlimited).
type limitedSet struct {
	mbit            int
	flavor          string
	id, app, ip     string
	inFile, outFile string // what the other side downloads from it
	size            int64  // bytes of either file
}

// NetLimits is 6c: the rate a set achieves under flavor limits of 8, 32
// and 100 Mbit/s, in each direction. Every limit is a flavor made through
// the API with Nova's quota:vif_inbound_average and
// quota:vif_outbound_average (KB/s, 1 KB/s = 8 kbit/s) and booted as
// demo; an unlimited m1.tiny set on the same host is the other end.
// Inbound is the limited set downloading from the unlimited one (HTB
// class on the host's ifb), outbound the other way round (HTB root on the
// set's own eth0).
func (e *Env) NetLimits(ctx context.Context) error {
	limits := []int{8, 32, 100}
	secs, reps := 6.5, 5
	if e.Quick {
		secs, reps = 1, 1
	}
	sets := []*limitedSet{{mbit: 0, flavor: "1"}}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		e.removeLimitSets(dctx, sets)
	}()
	for _, m := range limits {
		f, err := e.bandwidthFlavor(ctx, m)
		if err != nil {
			return err
		}
		sets = append(sets, &limitedSet{mbit: m, flavor: f})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range sets {
		g.Go(func() error { return e.bootLimited(gctx, s) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	peer, limited := sets[0], sets[1:]
	for _, s := range limited {
		// Sized for secs at the limit (TCP payload is ~95% of the wire).
		kib := int(math.Ceil(float64(s.mbit) * 1e6 / 8 * 0.95 * secs / 1024))
		s.inFile, s.outFile, s.size = fmt.Sprintf("in-%d", s.mbit), "out", int64(kib)*1024
		for _, w := range []struct{ app, name string }{{peer.app, s.inFile}, {s.app, s.outFile}} {
			if _, err := e.execIn(ctx, w.app, "dd", "if=/dev/zero", "of=/www/"+w.name, "bs=1024", "count="+strconv.Itoa(kib)); err != nil {
				return fmt.Errorf("payload for %d Mbit/s: %w", s.mbit, err)
			}
		}
	}

	type key struct {
		mbit int
		dir  string
	}
	got := map[key][]rateSample{}
	for i := range reps {
		for _, s := range limited {
			in, err := e.timedGet(ctx, s.app, "http://"+peer.ip+"/"+s.inFile, s.size)
			if err != nil {
				return fmt.Errorf("%d Mbit/s inbound: %w", s.mbit, err)
			}
			out, err := e.timedGet(ctx, peer.app, "http://"+s.ip+"/"+s.outFile, s.size)
			if err != nil {
				return fmt.Errorf("%d Mbit/s outbound: %w", s.mbit, err)
			}
			got[key{s.mbit, "in"}] = append(got[key{s.mbit, "in"}], in)
			got[key{s.mbit, "out"}] = append(got[key{s.mbit, "out"}], out)
			e.Log.Info("rate sample", "i", i, "limit_mbit", s.mbit,
				"in_wire_mbit", fmt.Sprintf("%.2f", in.wireMbit()), "in_goodput_mbit", fmt.Sprintf("%.2f", in.goodMbit()),
				"out_wire_mbit", fmt.Sprintf("%.2f", out.wireMbit()), "out_goodput_mbit", fmt.Sprintf("%.2f", out.goodMbit()))
		}
	}

	detail := map[string]any{"seconds_planned": secs, "repetitions": reps}
	shortest, lastMTU := math.Inf(1), 0
	for _, s := range limited {
		for _, dir := range []string{"in", "out"} {
			samples := got[key{s.mbit, dir}]
			var wire, good, took []float64
			mtu := 0
			for _, x := range samples {
				wire, good, took = append(wire, x.wireMbit()), append(good, x.goodMbit()), append(took, x.secs)
				shortest = min(shortest, x.secs)
				mtu, lastMTU = x.mtu, x.mtu
			}
			ws, gs := stats.Of(wire), stats.Of(good)
			limit := float64(s.mbit)
			ratio := ws.P50 / limit
			what := "inbound (HTB class on the host's ifb)"
			if dir == "out" {
				what = "outbound (HTB root on the set's eth0)"
			}
			e.Report.Add(report.Row{
				ID:     fmt.Sprintf("6c-%d%s", s.mbit, dir),
				Metric: fmt.Sprintf("achieved rate, flavor limit %d Mbit/s (quota:vif_%sbound_average=%d KB/s), %s: wire rate, ~%.1f s per download", s.mbit, dir, s.mbit*125, what, secs),
				Unit:   "Mbit/s", Value: &ws, Baseline: "limit", BaselineSingle: report.F(limit), Ratio: ratio,
				Target: "±5% of the limit (wire rate, p50)", Met: report.B(math.Abs(ratio-1) <= 0.05),
				Note: fmt.Sprintf("TCP goodput p50 %.2f Mbit/s (%.3f× the limit; %.2f-%.2f), wire %.2f-%.2f; at MTU %d a full segment carries %d payload bytes in a %d-byte frame",
					gs.P50, gs.P50/limit, gs.Min, gs.Max, ws.Min, ws.Max, mtu, mtu-52, mtu+14),
			})
			detail[fmt.Sprintf("%d_mbit_%s", s.mbit, dir)] = map[string]any{"wire_mbit": wire, "goodput_mbit": good, "seconds": took, "mtu": mtu}
		}
	}
	e.Report.Detail("network_limits", detail)
	e.Report.Note("Rate limits (6c): for each limit a flavor made through the API (POST /flavors, then os-extra_specs "+
		"quota:vif_inbound_average and quota:vif_outbound_average in KB/s as Nova defines them, 1 KB/s = 8 kbit/s: 1000, "+
		"4000 and 12500) and a server of it booted as demo, beside an unlimited m1.tiny server on the same host. Inbound: "+
		"the limited server's wget downloads from the unlimited one's httpd; outbound: the other way round. Each download "+
		"is sized for ~%.0f s at the limit, %d times per limit and direction, interleaved. Time is read from /proc/uptime "+
		"inside the downloading container just before and after wget (10 ms ticks, no exec overhead; shortest sample %.2f s); "+
		"the wire rate is the byte count of the downloader's eth0 (/proc/net/dev rx_bytes: frames with their Ethernet "+
		"header, as HTB counts them) over that time, so the ±5%% target is judged on the rate HTB shapes, not on TCP "+
		"goodput, which is payload/frame = (MTU-52)/(MTU+14) of it (TCP with timestamps: 1448/1514 at MTU 1500, "+
		"%d/%d at this network's %d).", secs, reps, shortest, lastMTU-52, lastMTU+14, lastMTU)
	return nil
}

// bandwidthFlavor makes an m1.tiny-sized public flavor limited to mbit
// both ways, as an operator would, and returns its ID.
func (e *Env) bandwidthFlavor(ctx context.Context, mbit int) (string, error) {
	var out struct {
		Flavor struct {
			ID string `json:"id"`
		} `json:"flavor"`
	}
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: e.Compute() + "/flavors", Token: e.Admin.Token,
		Body: map[string]any{"flavor": map[string]any{"name": fmt.Sprintf("%sbw-%d", e.Prefix, mbit), "ram": 512, "vcpus": 1, "disk": 1}}}, &out); err != nil {
		return "", fmt.Errorf("create flavor: %w", err)
	}
	kBps := strconv.Itoa(mbit * 1000 / 8)
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: e.Compute() + "/flavors/" + out.Flavor.ID + "/os-extra_specs",
		Token: e.Admin.Token, Body: map[string]any{"extra_specs": map[string]string{
			"quota:vif_inbound_average": kBps, "quota:vif_outbound_average": kBps}}}, nil); err != nil {
		_ = e.deleteFlavor(ctx, out.Flavor.ID)
		return "", fmt.Errorf("flavor extra specs: %w", err)
	}
	return out.Flavor.ID, nil
}

func (e *Env) deleteFlavor(ctx context.Context, id string) error {
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodDelete, URL: e.Compute() + "/flavors/" + id, Token: e.Admin.Token,
		OK: []int{202, 404}}, nil)
	return err
}

// bootLimited boots s as demo and fills in its app container and address.
func (e *Env) bootLimited(ctx context.Context, s *limitedSet) error {
	b, err := e.boot(ctx, fmt.Sprintf("%sbw-%d", e.Prefix, s.mbit), map[string]any{"flavorRef": s.flavor})
	if err != nil {
		return err
	}
	s.id = b.ID
	if _, err := e.waitActive(ctx, b.ID, 100*time.Millisecond, 3*time.Minute); err != nil {
		return err
	}
	srv, err := e.getServer(ctx, b.ID)
	if err != nil {
		return err
	}
	if s.ip = firstAddr(srv.Addresses); s.ip == "" {
		return fmt.Errorf("server %s: no address", b.ID)
	}
	s.app, err = e.appOf(ctx, b.ID)
	return err
}

// removeLimitSets deletes 6c's servers, then its flavors.
func (e *Env) removeLimitSets(ctx context.Context, sets []*limitedSet) {
	n := 0
	for _, s := range sets {
		if s.id != "" {
			n++
			if err := e.deleteServer(ctx, s.id); err != nil {
				e.Log.Warn("delete server", "id", s.id, "err", err)
			}
		}
	}
	if n > 0 {
		if err := e.waitAllGone(ctx, n, 2*time.Minute); err != nil {
			e.Log.Warn("6c servers not gone", "err", err)
		}
	}
	for _, s := range sets {
		if s.mbit > 0 && s.flavor != "" {
			if err := e.deleteFlavor(ctx, s.flavor); err != nil {
				e.Log.Warn("delete flavor", "id", s.flavor, "err", err)
			}
		}
	}
}

// rateSample is one download timed inside the downloading set.
type rateSample struct {
	secs    float64 // wget's run, from /proc/uptime
	payload int64   // bytes of the file
	wire    int64   // bytes eth0 received meanwhile (frames with Ethernet header)
	mtu     int
}

func (r rateSample) goodMbit() float64 { return float64(r.payload) * 8 / r.secs / 1e6 }
func (r rateSample) wireMbit() float64 { return float64(r.wire) * 8 / r.secs / 1e6 }

// rateScript prints uptime and eth0's counters around one download of $1,
// then the file's size as received and eth0's MTU.
const rateScript = `set -e
cat /proc/uptime; grep 'eth0:' /proc/net/dev
n=$(wget -q -O - "$1" | wc -c)
cat /proc/uptime; grep 'eth0:' /proc/net/dev
echo "$n"; cat /sys/class/net/eth0/mtu`

// timedGet downloads url (size bytes) inside container app and times it
// there.
func (e *Env) timedGet(ctx context.Context, app, url string, size int64) (rateSample, error) {
	out, err := e.execOut(ctx, app, "sh", "-c", rateScript, "rate", url)
	if err != nil {
		return rateSample{}, err
	}
	l := strings.Split(strings.TrimSpace(out), "\n")
	if len(l) != 6 {
		return rateSample{}, fmt.Errorf("rate script printed %q", out)
	}
	var r rateSample
	t0, err0 := uptime(l[0])
	rx0, err1 := rxBytes(l[1])
	t1, err2 := uptime(l[2])
	rx1, err3 := rxBytes(l[3])
	var err4, err5 error
	r.payload, err4 = strconv.ParseInt(strings.TrimSpace(l[4]), 10, 64)
	r.mtu, err5 = strconv.Atoi(strings.TrimSpace(l[5]))
	for _, err := range []error{err0, err1, err2, err3, err4, err5} {
		if err != nil {
			return rateSample{}, fmt.Errorf("rate script printed %q: %w", out, err)
		}
	}
	r.secs, r.wire = t1-t0, rx1-rx0
	if r.secs <= 0 || r.payload != size {
		return rateSample{}, fmt.Errorf("rate script printed %q: want %d bytes in a positive time", out, size)
	}
	return r, nil
}

func uptime(line string) (float64, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return 0, fmt.Errorf("no uptime in %q", line)
	}
	return strconv.ParseFloat(f[0], 64)
}

// rxBytes reads the received bytes of a /proc/net/dev line ("eth0: 123 …";
// wide counters run into the colon).
func rxBytes(line string) (int64, error) {
	_, rest, ok := strings.Cut(line, ":")
	f := strings.Fields(rest)
	if !ok || len(f) == 0 {
		return 0, fmt.Errorf("no counters in %q", line)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// execOut runs a command in a container and returns its standard output.
func (e *Env) execOut(ctx context.Context, id string, cmd ...string) (string, error) {
	ex, err := e.Docker.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", err
	}
	att, err := e.Docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	_, err = stdcopy.StdCopy(&stdout, &stderr, att.Reader)
	att.Close()
	if err != nil {
		return "", err
	}
	for {
		st, err := e.Docker.ContainerExecInspect(ctx, ex.ID)
		switch {
		case err != nil:
			return "", err
		case st.Running:
			time.Sleep(10 * time.Millisecond)
		case st.ExitCode != 0:
			return "", fmt.Errorf("%s in %.12s: exit %d: %.300s", strings.Join(cmd, " "), id, st.ExitCode, stderr.String()+stdout.String())
		default:
			return stdout.String(), nil
		}
	}
}
