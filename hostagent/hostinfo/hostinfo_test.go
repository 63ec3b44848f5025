package hostinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemTotalMB(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte("MemFree:  100 kB\nMemTotal:       24681712 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := MemTotalMB(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := 24681712 / 1024; got != want {
		t.Errorf("MemTotalMB() = %d, want %d", got, want)
	}
}

func TestDetect(t *testing.T) {
	c, err := Detect(os.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.VCPUs < 1 || c.MemoryMB < 1 || c.DiskGB < 0 {
		t.Errorf("Detect() = %+v, want positive CPUs and memory", c)
	}
}
