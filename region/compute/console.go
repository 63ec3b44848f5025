package compute

import (
	"context"
	"net/http"

	"github.com/coder/websocket"

	"berth/internal/apierr"
	"berth/region/agentclient"
	"berth/region/store"
	"berth/schema"
)

// consoleProxy is GET /berth-console/?token=…: the websocket a serial
// console URL points at. The single-use token is the credential (browsers
// cannot send X-Auth-Token on a websocket); region dials the agent's exec
// endpoint with the agent secret and pipes frames both ways.
func (a *API) consoleProxy(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	serverID, err := a.cfg.Store.ConsumeConsoleToken(ctx, r.URL.Query().Get("token"))
	if err != nil {
		return err
	}
	_, agent, err := a.agentOf(ctx, store.Caller{Scope: store.Scope{AllProjects: true}}, serverID, "console")
	if err != nil {
		return err
	}
	up, _, err := websocket.Dial(ctx, agentclient.ExecURL(agent, serverID), &websocket.DialOptions{
		HTTPHeader: http.Header{schema.AgentTokenHeader: {a.cfg.Agents.Token()}},
	})
	if err != nil {
		return apierr.Wrap(err, apierr.Unavailable, "The server's console is unavailable.")
	}
	defer up.CloseNow()
	down, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: []string{"*"}})
	if err != nil {
		return nil // Accept has answered the client
	}
	defer down.CloseNow()
	up.SetReadLimit(1 << 20)
	down.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- pipe(ctx, up, down) }()
	go func() { errc <- pipe(ctx, down, up) }()
	err = <-errc
	status := websocket.StatusNormalClosure
	if cs := websocket.CloseStatus(err); cs != -1 {
		status = cs
	}
	_ = down.Close(status, "")
	_ = up.Close(status, "")
	return nil
}

func pipe(ctx context.Context, dst, src *websocket.Conn) error {
	for {
		typ, data, err := src.Read(ctx)
		if err != nil {
			return err
		}
		if err := dst.Write(ctx, typ, data); err != nil {
			return err
		}
	}
}
