package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// isTerminal says whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// bars says whether progress bars are drawn (on stderr): on a terminal by
// default, never when piped, unless --progress says otherwise.
func (a *app) bars() bool {
	switch a.progress {
	case "always":
		return true
	case "never":
		return false
	}
	return isTerminal(a.stderr)
}

func (a *app) newProgress(ctx context.Context) *mpb.Progress {
	out := a.stderr
	if f, ok := out.(*os.File); ok {
		// A terminal that reports no size (some CI pseudo-terminals) would
		// make mpb draw zero rows; hide that it is a terminal so it draws at
		// 80 columns.
		if w, h, err := term.GetSize(int(f.Fd())); err != nil || w == 0 || h == 0 {
			out = struct{ io.Writer }{f}
		}
	}
	return mpb.NewWithContext(ctx,
		mpb.WithOutput(out),
		mpb.WithRefreshRate(120*time.Millisecond),
		mpb.WithAutoRefresh(), // we only get here when bars are wanted, terminal or not
	)
}

// transfer shows a byte stream's progress: bytes, rate and ETA.
type transfer struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

// newTransfer starts a bar for total bytes (total < 0: unknown). It is a
// no-op when bars are off.
func (a *app) newTransfer(ctx context.Context, name string, total int64) *transfer {
	if !a.bars() {
		return &transfer{}
	}
	p := a.newProgress(ctx)
	t := max(total, 0)
	bar := p.New(t,
		mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding(" ").Rbound("]"),
		mpb.BarWidth(40),
		mpb.PrependDecorators(
			decor.Name(name, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace),
			decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_MMSS, 30, decor.WCSyncSpace), " done"),
		),
	)
	return &transfer{p: p, bar: bar}
}

// Reader counts what is read through r.
func (t *transfer) Reader(r io.Reader) io.Reader {
	if t.bar == nil {
		return r
	}
	return t.bar.ProxyReader(r)
}

// Writer counts what is written through w.
func (t *transfer) Writer(w io.Writer) io.Writer {
	if t.bar == nil {
		return w
	}
	return t.bar.ProxyWriter(w)
}

// Done finishes the bar: complete when ok, aborted (left on screen) when not.
func (t *transfer) Done(ok bool) {
	if t.bar == nil {
		return
	}
	if ok {
		t.bar.SetTotal(-1, true)
	} else {
		t.bar.Abort(false)
	}
	t.p.Wait()
}

// statusUI shows a --wait: a bar of Nova's progress with the status and
// task state beside it on a terminal, one line per change otherwise.
type statusUI struct {
	a    *app
	name string
	p    *mpb.Progress
	bar  *mpb.Bar

	mu     sync.Mutex
	status string
	last   string
}

func (a *app) newStatusUI(ctx context.Context, name string) *statusUI {
	u := &statusUI{a: a, name: name}
	if a.bars() {
		u.p = a.newProgress(ctx)
		u.bar = u.p.New(100,
			mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding(" ").Rbound("]"),
			mpb.BarWidth(40),
			mpb.PrependDecorators(
				decor.Name(name, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
				decor.Any(func(decor.Statistics) string {
					u.mu.Lock()
					defer u.mu.Unlock()
					return fmt.Sprintf("%-24s", u.status)
				}),
			),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)),
		)
	}
	return u
}

// Update shows a new state; progress < 0 leaves the bar where it is.
func (u *statusUI) Update(status string, progress int) {
	u.mu.Lock()
	u.status = status
	changed := status != u.last
	u.last = status
	u.mu.Unlock()
	if u.bar != nil {
		if progress >= 0 {
			u.bar.SetCurrent(int64(min(progress, 99)))
		}
		return
	}
	if changed && u.a.progress != "never" {
		if progress >= 0 {
			fmt.Fprintf(u.a.stderr, "%s: %s, progress %d%%\n", u.name, status, progress)
		} else {
			fmt.Fprintf(u.a.stderr, "%s: %s\n", u.name, status)
		}
	}
}

// Done ends the display.
func (u *statusUI) Done(ok bool) {
	if u.bar == nil {
		return
	}
	if ok {
		u.bar.SetCurrent(100)
		u.bar.SetTotal(-1, true)
	} else {
		u.bar.Abort(false)
	}
	u.p.Wait()
}
