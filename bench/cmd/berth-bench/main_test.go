package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"berth/bench/report"
)

// TestQuickBench runs every scenario in quick mode against a stack of its
// own, to prove the bench still works. It asserts nothing about timings:
// only that each scenario ran and produced rows.
func TestQuickBench(t *testing.T) {
	if testing.Short() {
		t.Skip("brings a whole stack up (about a minute)")
	}
	need := func(ok bool, why string) {
		t.Helper()
		if ok {
			return
		}
		if os.Getenv("BERTH_REQUIRE_REAL") == "1" {
			t.Fatalf("%s (and BERTH_REQUIRE_REAL=1 forbids skipping)", why)
		}
		t.Skip(why)
	}
	need(os.Geteuid() == 0, "needs root (dockerd, OVS, veths)")
	bin, err := filepath.Abs("../../../bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"berth-region", "berth-imagesvc", "berth-hostagent", "berth-pause"} {
		_, err := os.Stat(filepath.Join(bin, b))
		need(err == nil, b+" not built (make build)")
	}
	out := filepath.Join(t.TempDir(), "quick.json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(ctx, options{quick: true, binDir: bin, jsonPath: out}, log); err != nil {
		t.Fatalf("quick bench: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results: %v", err)
	}
	seen := map[byte]bool{}
	for _, r := range rep.Rows {
		seen[r.ID[0]] = true
	}
	for _, s := range "12345678" {
		if !seen[byte(s)] {
			t.Errorf("no result rows for scenario %c", s)
		}
	}
}
