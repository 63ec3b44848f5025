package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseSetFile feeds the parser of `berth set create -f FILE`
// arbitrary YAML. It must never panic or blow up on aliases, and what it
// accepts has a name, a flavor and containers, and survives a round trip
// through YAML unchanged (no key is silently dropped).
func FuzzParseSetFile(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "docs", "examples", "set.yaml")); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"name: a\nflavor: m1.tiny\ncontainers:\n  - name: app\n    image: demo\n",
		"name: a\nflavor: m1.tiny\ncontainers: []\n",
		"name: a\nflavor: m1.tiny\ncontainers:\n  - name: app\n    imgae: demo\n", // a typo: unknown key
		"name: a\nflavor: 1\ncontainers:\n  - limits: {vcpus: .inf, memory_mb: -1}\n",
		"name: [a]\n",
		"{}",
		"",
		"---\n---\n",
		"name: &a x\nflavor: *a\ncontainers: [{name: *a}]\n",
		// A billion laughs.
		"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\nname: *d\n",
		"name: a\nflavor: f\ncontainers:\n  - env: {A: 1, B: [x]}\n",
		"name: a\nflavor: f\ncontainers:\n  - command: !!binary aGVsbG8=\n",
		"name: \"\\ud800\"\nflavor: f\ncontainers: [{}]\n",
		"\t name: a",
		"name: a\nname: b\nflavor: f\ncontainers: [{}]\n",
		"<<: {name: a, flavor: f}\ncontainers: [{}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := parseSetFile(b)
		if err != nil {
			if sf != nil {
				t.Fatalf("error %v with a result %+v", err, sf)
			}
			return
		}
		if sf.Name == "" || sf.Flavor == "" || len(sf.Containers) == 0 {
			t.Fatalf("accepted %q as %+v: want a name, a flavor and containers", b, sf)
		}
		out, err := yaml.Marshal(sf)
		if err != nil {
			t.Fatalf("marshal %+v: %v", sf, err)
		}
		again, err := parseSetFile(out)
		if err != nil {
			t.Fatalf("re-parse of\n%s\nfailed: %v (from %q)", out, err, b)
		}
		if !reflect.DeepEqual(normalize(sf), normalize(again)) {
			t.Fatalf("round trip changed the set:\n%+v\n%+v\n(from %q)", sf, again, b)
		}
	})
}

// normalize makes empty and nil collections compare equal (YAML writes
// neither).
func normalize(f *setFile) *setFile {
	g := *f
	if len(g.Networks) == 0 {
		g.Networks = nil
	}
	g.Containers = append([]containerFile(nil), f.Containers...)
	for i := range g.Containers {
		c := &g.Containers[i]
		if len(c.Command) == 0 {
			c.Command = nil
		}
		if len(c.Env) == 0 {
			c.Env = nil
		}
		if len(c.Volumes) == 0 {
			c.Volumes = nil
		}
	}
	return &g
}
