package scenario

import "testing"

func TestRxBytes(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       int64
		err        bool
	}{
		{"spaced", "  eth0:    1234     10    0    0    0     0          0         0     5678      9    0    0    0     0       0          0", 1234, false},
		{"wide counter runs into the colon", "  eth0:123456789012 999 0 0 0 0 0 0 1 1 0 0 0 0 0 0", 123456789012, false},
		{"no colon", "eth0 1234", 0, true},
		{"no counters", "eth0:", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rxBytes(tc.line)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("rxBytes(%q) = %d, %v; want %d, error %v", tc.line, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestUptime(t *testing.T) {
	got, err := uptime("3979.14 7270.74\n")
	if err != nil || got != 3979.14 {
		t.Errorf("uptime = %v, %v; want 3979.14", got, err)
	}
	if _, err := uptime(""); err == nil {
		t.Error("uptime of an empty line: no error")
	}
}
