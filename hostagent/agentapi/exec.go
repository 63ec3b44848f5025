package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// exec: GET /exec?cmd=/bin/sh[&cmd=arg...]&tty=1 — a websocket to an
// interactive process in the running container. Binary messages carry
// stdin (client → agent) and stdout/stderr (agent → client); a text
// message {"resize": [cols, rows]} resizes the TTY. The agent closes the
// socket (normal closure, reason "exit N") when the process exits.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) error {
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	if err := mustRun(c); err != nil {
		return err
	}
	q := r.URL.Query()
	cmd := q["cmd"]
	if len(cmd) == 0 || cmd[0] == "" {
		cmd = []string{"/bin/sh"}
	}
	tty := q.Get("tty") == "1" || q.Get("tty") == "true"
	ctx, cancel := s.call(r.Context())
	ex, err := s.cfg.Docker.ContainerExecCreate(ctx, c.ID, container.ExecOptions{
		Cmd: cmd, Tty: tty, AttachStdin: true, AttachStdout: true, AttachStderr: true,
		Env: []string{"TERM=xterm"},
	})
	cancel()
	if err != nil {
		return dockerErr(err, "exec")
	}
	// Region dials with the agent token, never with a browser's cookies:
	// the Origin check protects nothing here.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("exec: websocket upgrade failed", "set_id", r.PathValue("set_id"), "err", err)
		return nil // Accept has answered
	}
	ws.SetReadLimit(1 << 20)
	log := s.log.With("set_id", r.PathValue("set_id"), "container_id", c.ID, "exec_id", ex.ID)
	log.Info("exec session started", "cmd", cmd, "tty", tty)
	code, err := s.pump(r.Context(), ws, ex.ID, tty)
	if err != nil {
		log.Info("exec session ended", "err", err)
		ws.Close(websocket.StatusInternalError, truncate(err.Error(), 100))
		return nil
	}
	log.Info("exec session ended", "exit_code", code)
	ws.Close(websocket.StatusNormalClosure, "exit "+strconv.Itoa(code))
	return nil
}

// pump joins the websocket and the exec's stream until the process exits
// (its output ends) or the client goes away, and returns the exit code.
func (s *Server) pump(ctx context.Context, ws *websocket.Conn, execID string, tty bool) (int, error) {
	actx, cancel := s.call(ctx)
	att, err := s.cfg.Docker.ContainerExecAttach(actx, execID, container.ExecAttachOptions{Tty: tty})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("exec attach: %w", err)
	}
	defer att.Close()

	// Client → process. A canceled Read closes the websocket, so this
	// reader runs on the request's context and ends when the client goes
	// away (closing the exec's stream) or when the caller closes the socket.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			typ, b, err := ws.Read(ctx)
			if err != nil {
				att.Close() // ends the output copy below
				return
			}
			if typ == websocket.MessageText {
				var msg struct {
					Resize []uint `json:"resize"`
				}
				if json.Unmarshal(b, &msg) == nil && len(msg.Resize) == 2 && tty {
					rctx, rcancel := s.call(ctx)
					err := s.cfg.Docker.ContainerExecResize(rctx, execID, container.ResizeOptions{Width: msg.Resize[0], Height: msg.Resize[1]})
					rcancel()
					if err != nil {
						s.log.Debug("exec resize", "exec_id", execID, "err", err)
					}
				}
				continue
			}
			if _, err := att.Conn.Write(b); err != nil {
				return
			}
		}
	}()

	// Process → client, until its output ends.
	var mu sync.Mutex
	out := writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		wctx, cancel := s.call(ctx)
		defer cancel()
		if err := ws.Write(wctx, websocket.MessageBinary, b); err != nil {
			return 0, err
		}
		return len(b), nil
	})
	if tty {
		_, err = io.Copy(out, att.Reader)
	} else {
		_, err = stdcopy.StdCopy(out, out, att.Reader)
	}
	select {
	case <-gone:
		return 0, errors.New("client went away")
	default:
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	// The stream ends a moment before Docker records the exit code.
	for range 20 {
		ictx, icancel := s.call(context.WithoutCancel(ctx))
		ins, err := s.cfg.Docker.ContainerExecInspect(ictx, execID)
		icancel()
		if err != nil {
			return 0, fmt.Errorf("exec inspect: %w", err)
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1, nil
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
