package flows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// OFCtl talks to one bridge through ovs-ofctl (flows) and to ovs-vswitchd
// through ovs-appctl (conntrack). Every call runs under its own timeout.
//
// Why the CLI and not an OpenFlow library: ovs-ofctl is OVS's own parser
// and printer of the Nicira extensions this pipeline lives on (ct, learn,
// resubmit, registers), it speaks bundles (atomic replace) and the flows
// it takes are the flows operators read in dump-flows; a Go OpenFlow
// stack would have to keep a controller connection and re-implement the
// extensions' encodings. One exec per change or check is cheap next to a
// set's lifetime.
type OFCtl struct {
	// Bin is the ovs-ofctl binary (default "ovs-ofctl").
	Bin string
	// Target is the bridge as ovs-ofctl names it: a bridge name (default
	// run directory) or "unix:<rundir>/<bridge>.mgmt".
	Target string
	// Appctl is the ovs-appctl binary (default "ovs-appctl").
	Appctl string
	// AppctlTarget is ovs-appctl's -t for ovs-vswitchd: a control socket
	// path or "ovs-vswitchd".
	AppctlTarget string
	// Timeout bounds each call (default 10s).
	Timeout time.Duration
}

func (o OFCtl) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 10 * time.Second
	}
	return o.Timeout
}

func (o OFCtl) run(ctx context.Context, stdin string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (o OFCtl) ofctl(ctx context.Context, stdin string, args ...string) (string, error) {
	bin := o.Bin
	if bin == "" {
		bin = "ovs-ofctl"
	}
	return o.run(ctx, stdin, bin, append([]string{"-O", "OpenFlow14"}, args...)...)
}

// Entry is one flow read back from the switch.
type Entry struct {
	Cookie   uint64
	Table    int
	Priority int
	// Text is the flow as ovs-ofctl prints it (without statistics).
	Text string
}

var (
	reCookie   = regexp.MustCompile(`(?:^|[ ,])cookie=(0x[0-9a-f]+)`)
	reTable    = regexp.MustCompile(`(?:^|[ ,])table=(\d+)`)
	rePriority = regexp.MustCompile(`(?:^|[ ,])priority=(\d+)`)
)

// Dump returns the flows whose cookie matches cookie under mask.
func (o OFCtl) Dump(ctx context.Context, cookie, mask uint64) ([]Entry, error) {
	out, err := o.ofctl(ctx, "", "--no-stats", "dump-flows", o.Target, fmt.Sprintf("cookie=%#x/%#x", cookie, mask))
	if err != nil {
		return nil, err
	}
	return parseDump(out)
}

func parseDump(out string) ([]Entry, error) {
	var es []Entry
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.Contains(line, "_FLOW reply") {
			continue
		}
		e := Entry{Text: line}
		if m := reCookie.FindStringSubmatch(line); m != nil {
			c, err := strconv.ParseUint(m[1], 0, 64)
			if err != nil {
				return nil, fmt.Errorf("parse cookie in %q: %w", line, err)
			}
			e.Cookie = c
		}
		if m := reTable.FindStringSubmatch(line); m != nil {
			e.Table, _ = strconv.Atoi(m[1])
		}
		if m := rePriority.FindStringSubmatch(line); m != nil {
			e.Priority, _ = strconv.Atoi(m[1])
		} else {
			e.Priority = 32768 // OpenFlow's default, not printed
		}
		es = append(es, e)
	}
	return es, nil
}

// Replace installs fs under cookie and deletes the flows carrying any of
// stale, in one bundle: the switch goes from the old set to the new one
// atomically. Flows of fs with the match of an old flow replace it in
// place; only old flows no longer wanted disappear.
func (o OFCtl) Replace(ctx context.Context, cookie uint64, fs []Flow, stale []uint64) error {
	return o.ReplaceSets(ctx, map[uint64][]Flow{cookie: fs}, stale)
}

// ReplaceSets is Replace for several flow sets (by cookie) in one bundle.
func (o OFCtl) ReplaceSets(ctx context.Context, sets map[uint64][]Flow, stale []uint64) error {
	var b strings.Builder
	for _, cookie := range slices.Sorted(maps.Keys(sets)) {
		for _, f := range sets[cookie] {
			b.WriteString("add ")
			b.WriteString(f.Spec(cookie))
			b.WriteByte('\n')
		}
	}
	for _, c := range stale {
		if _, ok := sets[c]; ok {
			continue
		}
		fmt.Fprintf(&b, "delete cookie=%#x/%#x\n", c, MaskAll)
	}
	if b.Len() == 0 {
		return nil
	}
	_, err := o.ofctl(ctx, b.String(), "--bundle", "add-flows", o.Target, "-")
	return err
}

// Delete removes the flows whose cookie matches cookie under mask.
func (o OFCtl) Delete(ctx context.Context, cookie, mask uint64) error {
	_, err := o.ofctl(ctx, "", "del-flows", o.Target, fmt.Sprintf("cookie=%#x/%#x", cookie, mask))
	return err
}

// FlushZone forgets the datapath's conntrack entries of one zone.
func (o OFCtl) FlushZone(ctx context.Context, zone int) error {
	bin := o.Appctl
	if bin == "" {
		bin = "ovs-appctl"
	}
	t := o.AppctlTarget
	if t == "" {
		t = "ovs-vswitchd"
	}
	_, err := o.run(ctx, "", bin, "-t", t, "dpctl/flush-conntrack", "zone="+strconv.Itoa(zone))
	return err
}

// Cookies groups entries by cookie and counts them.
func Cookies(es []Entry) map[uint64]int {
	m := map[uint64]int{}
	for _, e := range es {
		m[e.Cookie]++
	}
	return m
}
