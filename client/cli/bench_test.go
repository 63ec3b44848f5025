package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// BenchmarkCommandWithCachedToken is the CLI's own cost per command once
// the process runs: config, clouds.yaml, the cached token, building the
// command tree, one API call to a local test double and the table. (The
// process start-up on top is measured with hyperfine; see docs/cli.md.)
func BenchmarkCommandWithCachedToken(b *testing.B) {
	f := newFakeCloud(b)
	env := f.env()
	getenv := func(k string) string { return env[k] }
	run := func() {
		var out bytes.Buffer
		if code := Main(context.Background(), []string{"flavor", "list"}, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: getenv}); code != 0 {
			b.Fatalf("exit %d: %s", code, out.String())
		}
	}
	run() // fills the token cache
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	b.StopTimer()
	if n := f.auths(); n != 1 {
		b.Errorf("authentications = %d, want 1", n)
	}
}
