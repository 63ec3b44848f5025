// Package wirecount counts the bytes that cross TCP connections: a
// listener wrapper for a server one starts, and a forwarding proxy for a
// server one did not start. Tests and the bench measure with it what an
// image pull really moved, rather than computing it from sizes.
package wirecount

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Counter counts bytes on connections, seen from the server's side.
type Counter struct {
	// Read is what clients sent, Written what they were sent.
	Read, Written atomic.Int64
}

// Reset zeroes the counter.
func (c *Counter) Reset() { c.Read.Store(0); c.Written.Store(0) }

// Total is both directions together.
func (c *Counter) Total() int64 { return c.Read.Load() + c.Written.Load() }

// Listen wraps ln so that every accepted connection counts into c.
func Listen(ln net.Listener, c *Counter) net.Listener { return &listener{Listener: ln, c: c} }

type listener struct {
	net.Listener
	c *Counter
}

func (l *listener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: conn, c: l.c}, nil
}

// countedConn counts a connection's bytes.
type countedConn struct {
	net.Conn
	c *Counter
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.Read.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.Written.Add(int64(n))
	return n, err
}

// Proxy forwards each connection it accepts on Addr to a target address,
// counting in Wire the bytes its clients send and receive.
type Proxy struct {
	// Addr is where clients connect ("127.0.0.1:port").
	Addr string
	Wire Counter

	target string
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewProxy listens on a free loopback port and forwards to target
// ("host:port").
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	p.ln = Listen(ln, &p.Wire)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// track remembers c for Close; false when the proxy is closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		client.Close()
		return
	}
	defer p.untrack(client)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client, up)
		// The server finished: let the client see the end too.
		closeWrite(client)
	}()
	_, _ = io.Copy(up, client)
	closeWrite(up)
	<-done
}

// closeWrite half-closes c where the connection allows it, so a request
// body's end reaches the other side while answers still flow back.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	if cc, ok := c.(*countedConn); ok {
		closeWrite(cc.Conn)
	}
}

// Close stops accepting, cuts the connections in flight and waits for
// their goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
