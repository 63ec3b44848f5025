package pgdb

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"
	"unicode/utf8"
)

// lib/pq v1.12.3 takes an ErrorResponse longer than 30,000 bytes for a
// pre-protocol error (libpq's MAX_ERRLEN check, meant for the plain-text
// "could not fork" a backend sends at startup): it reads up to the first
// NUL, returns a plain error and leaves the rest of the message in the
// stream, so the next read on that pooled connection takes message bytes
// for a header and waits forever for a length of gigabytes (lib/pq#1324).
// PostgreSQL echoes a rejected value in full ("invalid input syntax for
// type uuid: \"…\"", a unique key's DETAIL), so any client value over
// 30 KB that reaches a typed column would wedge a request and leak a
// connection. clampConn sits under the driver and shortens the fields of
// such an ErrorResponse before lib/pq sees it: the error then arrives as
// an ordinary *pq.Error (which Classify maps, a 22xxx to a 400) and the
// connection stays in step.

const (
	// pqMaxErrLen is lib/pq's limit (proto.MaxErrlen): an ErrorResponse
	// body longer than this is misread.
	pqMaxErrLen = 30_000
	// maxErrField is what an error field is cut to; far below
	// pqMaxErrLen even with every field type present.
	maxErrField = 1024
	// maxClampBuffer bounds what is buffered to rewrite one message; a
	// longer "ErrorResponse" is not one (a pre-protocol text read as a
	// length) and passes through untouched.
	maxClampBuffer = 64 << 20
)

// Protocol codes in the first message a client sends.
const (
	protoV3          = 3 << 16
	protoV3_2        = 3<<16 | 2
	sslRequestCode   = 1234<<16 | 5679
	gssEncRequest    = 1234<<16 | 5680
	cancelRequest    = 1234<<16 | 5678
	msgErrorResponse = 'E'
)

// clampDialer is a lib/pq Dialer whose connections clamp long error
// responses.
type clampDialer struct{ d net.Dialer }

func (c clampDialer) Dial(network, address string) (net.Conn, error) {
	return c.DialContext(context.Background(), network, address)
}

func (c clampDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.DialContext(ctx, network, address)
}

func (c clampDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := c.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &clampConn{Conn: conn, r: bufio.NewReaderSize(conn, clampReadBuffer)}, nil
}

// clampReadBuffer is what clampConn reads from the socket at a time.
// Without it, walking the stream message by message cost two read
// system calls per message: a list of 1,000 rows made 2,000 of them.
const clampReadBuffer = 32 << 10

// What clampConn does with the bytes the server sends.
const (
	modeUnknown  = iota // no client message yet
	modeMessages        // plain protocol messages: parse and clamp
	modeSSLReply        // one byte answering an SSL/GSS request comes first
	modeOff             // TLS, a cancel request or something unexpected: pass through
)

// clampConn parses the server's message stream (type byte, 4-byte length,
// body) and rewrites over-long ErrorResponses; everything else passes
// through as it came. Encrypted streams are left alone: it sits under TLS.
type clampConn struct {
	net.Conn
	r    *bufio.Reader // reads Conn; every read goes through it
	mu   sync.Mutex    // mode, set by the first Write, read by Read
	mode int
	out  []byte // bytes due to the reader before any new read
	left int    // body bytes of the current message still to pass through
}

func (c *clampConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.mode == modeUnknown {
		c.mode = modeOff
		if len(b) >= 8 {
			switch binary.BigEndian.Uint32(b[4:8]) {
			case protoV3, protoV3_2:
				c.mode = modeMessages
			case sslRequestCode, gssEncRequest:
				c.mode = modeSSLReply
			}
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *clampConn) getMode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

func (c *clampConn) setMode(m int) {
	c.mu.Lock()
	c.mode = m
	c.mu.Unlock()
}

func (c *clampConn) Read(p []byte) (int, error) {
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	switch c.getMode() {
	case modeMessages:
	case modeSSLReply:
		n, err := c.r.Read(p[:min(len(p), 1)])
		if n == 1 {
			if p[0] == 'N' { // refused: plain messages follow
				c.setMode(modeMessages)
			} else { // 'S', 'G' (TLS or GSS follows) or an error text
				c.setMode(modeOff)
			}
		}
		return n, err
	default:
		return c.r.Read(p)
	}
	if c.left > 0 {
		n, err := c.r.Read(p[:min(len(p), c.left)])
		c.left -= n
		return n, err
	}
	var hdr [5]byte
	if n, err := io.ReadFull(c.r, hdr[:]); err != nil {
		c.out = append(c.out, hdr[:n]...)
		return c.flush(p, err)
	}
	size := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	switch {
	case size < 0:
		c.setMode(modeOff) // not the protocol: let the driver judge it
		c.out = append(c.out, hdr[:]...)
	case hdr[0] == msgErrorResponse && size > pqMaxErrLen && size <= maxClampBuffer:
		body := make([]byte, size)
		n, err := io.ReadFull(c.r, body)
		if err != nil {
			c.out = append(append(c.out, hdr[:]...), body[:n]...)
			return c.flush(p, err)
		}
		if short, ok := clampErrorFields(body); ok {
			binary.BigEndian.PutUint32(hdr[1:], uint32(len(short)+4))
			body = short
		}
		c.out = append(append(c.out, hdr[:]...), body...)
	default:
		c.out = append(c.out, hdr[:]...)
		c.left = size
	}
	return c.flush(p, nil)
}

// flush hands buffered bytes to the reader, with err once they are out.
func (c *clampConn) flush(p []byte, err error) (int, error) {
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) > 0 {
		return n, nil
	}
	c.out = nil
	return n, err
}

// clampErrorFields cuts every field of an ErrorResponse body (a list of
// code byte + NUL-terminated text, then a NUL) to maxErrField bytes, on a
// UTF-8 boundary, marking the cut with "…". ok is false when body is not
// such a list.
func clampErrorFields(body []byte) (out []byte, ok bool) {
	out = make([]byte, 0, 4096)
	for i := 0; i < len(body); {
		code := body[i]
		if code == 0 {
			if i != len(body)-1 {
				return nil, false
			}
			return append(out, 0), true
		}
		end := i + 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		if end == len(body) {
			return nil, false
		}
		v := body[i+1 : end]
		if len(v) > maxErrField {
			cut := maxErrField
			for cut > 0 && !utf8.RuneStart(v[cut]) {
				cut--
			}
			v = append(v[:cut:cut], "…"...)
		}
		out = append(append(append(out, code), v...), 0)
		i = end + 1
	}
	return nil, false
}
