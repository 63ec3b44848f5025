package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth/bench/stats"
)

func TestUpdateDocKeepsHandWrittenText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perf.md")
	doc := "# Performance\n\nhand-written intro\n\n" + BeginMarker + "\nold table\n" + EndMarker + "\n\nhand-written outro\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	s := stats.Of([]float64{0.2, 0.3, 0.4})
	r := &Report{Mode: "full"}
	r.Add(Row{ID: "1a", Metric: "boot", Unit: "s", Value: &s, Target: "p50 ≤ 0.45 s", Met: B(true)})
	if err := r.UpdateDoc(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"hand-written intro", "hand-written outro", "| 1a | boot |", "300 ms", "| met |"} {
		if !strings.Contains(got, want) {
			t.Errorf("document lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "old table") {
		t.Errorf("old generated section kept:\n%s", got)
	}
	if strings.Count(got, BeginMarker) != 1 || strings.Count(got, EndMarker) != 1 {
		t.Errorf("want one pair of markers:\n%s", got)
	}
}

func TestFmtVal(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.0000004, "s", "0.4 µs"}, {0.0042, "s", "4.20 ms"}, {0.445, "s", "445 ms"}, {34.43, "s", "34.43 s"},
		{1.55, "x", "1.55×"}, {267, "/s", "267 /s"}, {2.9, "/s", "2.9 /s"}, {25.1, "MB", "25.1 MB"},
	} {
		if got := fmtVal(tc.v, tc.unit); got != tc.want {
			t.Errorf("fmtVal(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}
