package wirecount_test

import (
	"bytes"
	"io"
	"net"
	"testing"

	"berth/imagesvc/wirecount"
)

// TestProxyCountsBothWays: what a client sends and receives through the
// proxy is counted to the byte, and the bytes arrive unchanged.
func TestProxyCountsBothWays(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const in, out = 300_000, 1_000_003
	reply := bytes.Repeat([]byte("0123456789abcdef"), out/16+1)[:out]
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.CopyN(io.Discard, c, in)
		_, _ = c.Write(reply)
	}()
	p, err := wirecount.NewProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, in)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, reply) {
		t.Fatalf("through the proxy: %d bytes, %v; want the %d sent", len(got), err, out)
	}
	if r, w := p.Wire.Read.Load(), p.Wire.Written.Load(); r != in || w != out || p.Wire.Total() != in+out {
		t.Errorf("counted %d read, %d written; want %d and %d", r, w, in, out)
	}
	p.Wire.Reset()
	if p.Wire.Total() != 0 {
		t.Error("Reset left a count")
	}
}
