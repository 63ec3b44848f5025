// Package console attaches a terminal to a Berth serial console: the
// websocket URL that os-getSerialConsole returns (it embeds a short-lived
// token, so no header is needed). Binary frames carry the bytes both ways;
// a text frame {"resize": [cols, rows]} tells the server the terminal's
// size.
package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/coder/websocket"
)

// Size is a terminal size in character cells.
type Size struct {
	Cols, Rows int
}

// DetachKey is the byte (Ctrl-]) that ends an Attach from the keyboard.
const DetachKey = 0x1d

// AttachOpts wire an Attach.
type AttachOpts struct {
	Stdin  io.Reader
	Stdout io.Writer
	// Resize delivers terminal sizes to send (the first right away).
	Resize <-chan Size
	// DetachKey, when non-zero, is a byte of Stdin that ends the session.
	DetachKey byte
	// SendOnEOF is sent once Stdin ends (e.g. "\x04" so a shell reading a
	// piped script exits); nil sends nothing and keeps reading output.
	SendOnEOF []byte
	// HTTPClient dials the websocket; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// ErrDetached is returned when the user pressed the detach key.
var ErrDetached = errors.New("detached")

// Attach connects opts.Stdin/Stdout to the console at url until the server
// closes it (nil), the detach key is pressed (ErrDetached) or ctx ends.
func Attach(ctx context.Context, url string, opts AttachOpts) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: opts.HTTPClient})
	if err != nil {
		if resp != nil {
			return &DialError{Status: resp.StatusCode, Err: err}
		}
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)

	errc := make(chan error, 3)
	// Server → Stdout.
	go func() {
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				if s := websocket.CloseStatus(err); s == websocket.StatusNormalClosure || s == websocket.StatusGoingAway {
					errc <- nil
				} else {
					errc <- err
				}
				return
			}
			if _, err := opts.Stdout.Write(data); err != nil {
				errc <- err
				return
			}
		}
	}()
	// Stdin → server.
	if opts.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := opts.Stdin.Read(buf)
				if n > 0 {
					chunk := buf[:n]
					if opts.DetachKey != 0 {
						for i, b := range chunk {
							if b == opts.DetachKey {
								if i > 0 {
									_ = conn.Write(ctx, websocket.MessageBinary, chunk[:i])
								}
								errc <- ErrDetached
								return
							}
						}
					}
					if werr := conn.Write(ctx, websocket.MessageBinary, chunk); werr != nil {
						errc <- werr
						return
					}
				}
				if err != nil {
					if len(opts.SendOnEOF) > 0 {
						_ = conn.Write(ctx, websocket.MessageBinary, opts.SendOnEOF)
					}
					return // keep reading output until the server closes
				}
			}
		}()
	}
	// Terminal sizes → server.
	if opts.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-opts.Resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(map[string][2]int{"resize": {sz.Cols, sz.Rows}})
					if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
						return
					}
				}
			}
		}()
	}
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, ErrDetached) {
			conn.Close(websocket.StatusNormalClosure, "")
		}
		return err
	case <-ctx.Done():
		conn.Close(websocket.StatusNormalClosure, "")
		return ctx.Err()
	}
}

// DialError is a websocket handshake the server refused.
type DialError struct {
	Status int
	Err    error
}

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }
