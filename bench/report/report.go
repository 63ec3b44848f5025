// Package report holds the bench's results and renders them: a text table
// for the terminal, JSON for machines, and Markdown for
// docs/performance.md (only the part between its generated-section
// markers is rewritten, so the hand-written text around it stays).
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"berth/bench/stats"
)

// Report is one run of the bench.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Mode     string        `json:"mode"` // "quick" or "full"
	Machine  Machine       `json:"machine"`
	Rows     []Row         `json:"rows"`
	// Breakdowns show where the time of one operation goes.
	Breakdowns []Breakdown `json:"breakdowns,omitempty"`
	// Notes say how things were measured (simulations, seeding, caps) and
	// what the numbers point at.
	Notes []string `json:"notes,omitempty"`
	// Skipped lists scenarios that were not measured, with the reason.
	Skipped []string `json:"skipped,omitempty"`
	// Details are per-scenario raw numbers (samples, counts) for anyone
	// who wants more than the table.
	Details map[string]any `json:"details,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemoryMB  int    `json:"memory_mb"`
	Kernel    string `json:"kernel"`
	Docker    string `json:"docker"`
	GoVersion string `json:"go"`
	// OtherLoad is what else ran on the machine at the start (other
	// stacks' containers), because it skews every number.
	OtherLoad string `json:"other_load,omitempty"`
}

// Row is one line of the results table: a measured value, optionally with
// the baseline measured in the same run, their ratio, and a target.
type Row struct {
	ID     string `json:"id"` // "1a"
	Metric string `json:"metric"`
	// Unit of Value/Single: "s" (shown as ms below 1 s), "/s", "MB",
	// "MB/s", "B", "x" or "".
	Unit string `json:"unit"`
	// Value is a distribution (p50/p99/spread shown); Single a scalar.
	Value  *stats.Summary `json:"value,omitempty"`
	Single *float64       `json:"single,omitempty"`
	// Baseline names what Berth is compared with and its numbers.
	Baseline       string         `json:"baseline,omitempty"`
	BaselineValue  *stats.Summary `json:"baseline_value,omitempty"`
	BaselineSingle *float64       `json:"baseline_single,omitempty"`
	// Ratio is Berth over baseline (p50 over p50 for distributions).
	Ratio float64 `json:"ratio,omitempty"`
	// Target is the target in words; Met is nil without one.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Breakdown splits one operation into phases.
type Breakdown struct {
	Title  string  `json:"title"`
	Phases []Phase `json:"phases"`
	Note   string  `json:"note,omitempty"`
}

// Phase is one step of a breakdown, in seconds.
type Phase struct {
	Name  string        `json:"name"`
	Value stats.Summary `json:"value"`
	From  string        `json:"from"` // where the timestamps come from
}

// F is a helper for scalar rows.
func F(v float64) *float64 { return &v }

// B is a helper for Met.
func B(v bool) *bool { return &v }

// Add appends a row.
func (r *Report) Add(row Row) { r.Rows = append(r.Rows, row) }

// Note appends a note.
func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Skip records a scenario that was not measured.
func (r *Report) Skip(format string, args ...any) {
	r.Skipped = append(r.Skipped, fmt.Sprintf(format, args...))
}

// Detail stores raw numbers under key.
func (r *Report) Detail(key string, v any) {
	if r.Details == nil {
		r.Details = map[string]any{}
	}
	r.Details[key] = v
}

// fmtVal formats a value in a unit.
func fmtVal(v float64, unit string) string {
	switch unit {
	case "s":
		switch {
		case v == 0:
			return "0"
		case v < 1e-3:
			return fmt.Sprintf("%.1f µs", v*1e6)
		case v < 0.01:
			return fmt.Sprintf("%.2f ms", v*1e3)
		case v < 1:
			return fmt.Sprintf("%.0f ms", v*1e3)
		default:
			return fmt.Sprintf("%.2f s", v)
		}
	case "x":
		return fmt.Sprintf("%.2f×", v)
	case "/s", "MB/s", "Mbit/s":
		if v >= 100 {
			return fmt.Sprintf("%.0f %s", v, unit)
		}
		return fmt.Sprintf("%.1f %s", v, unit)
	case "MB":
		return fmt.Sprintf("%.1f MB", v)
	case "":
		return fmt.Sprintf("%g", v)
	default:
		return fmt.Sprintf("%g %s", v, unit)
	}
}

func (row Row) cells() (n, p50, p99, spread, base, ratio, met string) {
	n, p99, spread, base, ratio, met = "", "–", "–", "–", "–", "–"
	switch {
	case row.Value != nil:
		n = fmt.Sprint(row.Value.N)
		p50 = fmtVal(row.Value.P50, row.Unit)
		p99 = fmtVal(row.Value.P99, row.Unit)
		spread = fmt.Sprintf("%.0f%%", row.Value.Spread()*100)
	case row.Single != nil:
		p50 = fmtVal(*row.Single, row.Unit)
	default:
		p50 = "n/a"
	}
	switch {
	case row.BaselineValue != nil:
		base = fmt.Sprintf("%s: %s / %s", row.Baseline, fmtVal(row.BaselineValue.P50, row.Unit), fmtVal(row.BaselineValue.P99, row.Unit))
	case row.BaselineSingle != nil:
		base = fmt.Sprintf("%s: %s", row.Baseline, fmtVal(*row.BaselineSingle, row.Unit))
	case row.Baseline != "":
		base = row.Baseline
	}
	if row.Ratio != 0 {
		ratio = fmt.Sprintf("%.2f×", row.Ratio)
	}
	if row.Met != nil {
		met = "missed"
		if *row.Met {
			met = "met"
		}
	}
	return
}

// WriteText prints the table for a terminal.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "\nBerth bench (%s mode), %s, %d CPUs, took %s\n\n", r.Mode, r.Started.Format(time.RFC3339), r.Machine.CPUs, r.Duration.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tmetric\tn\tp50 (or value)\tp99\tspread\tbaseline p50 / p99\tratio\ttarget\tmet")
	for _, row := range r.Rows {
		n, p50, p99, spread, base, ratio, met := row.cells()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.ID, row.Metric, n, p50, p99, spread, base, ratio, row.Target, met)
	}
	tw.Flush()
	for _, b := range r.Breakdowns {
		fmt.Fprintf(w, "\n%s\n", b.Title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "phase\tp50\tp99\tfrom")
		for _, p := range b.Phases {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, fmtVal(p.Value.P50, "s"), fmtVal(p.Value.P99, "s"), p.From)
		}
		tw.Flush()
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(w, "\nNot measured:")
		for _, s := range r.Skipped {
			fmt.Fprintln(w, "  - "+s)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "  - "+n)
		}
	}
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markdown renders the generated section of docs/performance.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s (%s mode, took %s) on %d × %s, %d MB RAM, kernel %s, Docker %s, %s.\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Mode, r.Duration.Round(time.Second), r.Machine.CPUs,
		r.Machine.CPUModel, r.Machine.MemoryMB, r.Machine.Kernel, r.Machine.Docker, r.Machine.GoVersion)
	if r.Machine.OtherLoad != "" {
		fmt.Fprintf(&b, "Other load at the start: %s.\n", r.Machine.OtherLoad)
	}
	b.WriteString("\n| id | metric | n | p50 (or value) | p99 | spread (IQR/p50) | baseline p50 / p99 | ratio | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		n, p50, p99, spread, base, ratio, met := row.cells()
		metric := row.Metric
		if row.Note != "" {
			metric += " — " + row.Note
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.ID, mdEscape(metric), n, p50, p99,
			spread, mdEscape(base), ratio, mdEscape(row.Target), met)
	}
	for _, bd := range r.Breakdowns {
		fmt.Fprintf(&b, "\n**%s**\n\n| phase | p50 | p99 | measured from |\n|---|---|---|---|\n", mdEscape(bd.Title))
		for _, p := range bd.Phases {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdEscape(p.Name), fmtVal(p.Value.P50, "s"), fmtVal(p.Value.P99, "s"), mdEscape(p.From))
		}
		if bd.Note != "" {
			fmt.Fprintf(&b, "\n%s\n", bd.Note)
		}
	}
	if len(r.Skipped) > 0 {
		b.WriteString("\nNot measured in this run:\n\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nHow these were measured, and what they show:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// WriteJSON writes the report to path (directories are made).
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Markers delimit the generated section of the Markdown document.
const (
	BeginMarker = "<!-- berth-bench:begin (generated by make bench; edits here are overwritten) -->"
	EndMarker   = "<!-- berth-bench:end -->"
)

// UpdateDoc replaces the generated section of the Markdown file at path
// with r.Markdown(). A file without markers gets the section appended.
func (r *Report) UpdateDoc(path string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	section := BeginMarker + "\n" + r.Markdown() + EndMarker
	doc := string(old)
	i, j := strings.Index(doc, BeginMarker), strings.Index(doc, EndMarker)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + section + doc[j+len(EndMarker):]
	case doc == "":
		doc = "# Performance\n\n" + section + "\n"
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
