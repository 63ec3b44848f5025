package compute

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/imageclient"
	"berth/region/novastate"
	"berth/region/store"
	"berth/schema"
)

// agentOf returns a server and its host agent's URL, for the operations
// that talk to the agent directly. vmStates, when given, are the states
// the operation is allowed in (409 otherwise, as Nova answers).
func (a *API) agentOf(ctx context.Context, c store.Caller, id, verb string, vmStates ...string) (*store.Server, string, error) {
	srv, err := a.cfg.Store.FindServer(ctx, c.Scope, id)
	if err != nil {
		return nil, "", err
	}
	if len(vmStates) > 0 {
		ok := false
		for _, s := range vmStates {
			ok = ok || srv.VMState == s
		}
		if !ok {
			return nil, "", apierr.Conflictf("Cannot '%s' instance %s while it is in vm_state %s", verb, id, srv.VMState)
		}
	}
	if !srv.Host.Valid {
		return nil, "", apierr.Conflictf("Cannot '%s' instance %s: it is not on any host", verb, id)
	}
	h, err := a.cfg.Store.FindHost(ctx, srv.Host.String)
	if err != nil {
		return nil, "", err
	}
	return srv, h.AgentURL, nil
}

func (a *API) consoleOutput(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Length any `json:"length"`
	}
	if !isNullArg(arg) {
		if err := decodeArg("os-getConsoleOutput", arg, &body); err != nil {
			return err
		}
	}
	tail := 0
	switch v := body.Length.(type) {
	case nil:
	case float64:
		tail = int(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			return apierr.Invalidf("Invalid input for field/attribute length. Value: %s. It must be an integer.", v)
		}
		tail = n
	default:
		return apierr.Invalidf("Invalid input for field/attribute length. It must be an integer.")
	}
	if tail < -1 {
		return apierr.Invalidf("Invalid input for field/attribute length. Value: %d. It must be -1 or more.", tail)
	}
	if tail == -1 {
		tail = 0
	}
	_, agent, err := a.agentOf(r.Context(), c, id, "os-getConsoleOutput",
		novastate.Active, novastate.Stopped, novastate.Paused, novastate.Suspended, novastate.Error, novastate.Resized)
	if err != nil {
		return err
	}
	out, err := a.cfg.Agents.Logs(r.Context(), agent, id, tail)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"output": strings.ToValidUTF8(out, "?")})
	return nil
}

// logs is GET /servers/{id}/berth-logs?tail=N&follow=1: the console log as
// plain text, streamed while follow is set.
func (a *API) logs(w http.ResponseWriter, r *http.Request) error {
	c := caller(r)
	id := mux.Vars(r)["id"]
	q := r.URL.Query()
	tail, _ := strconv.Atoi(q.Get("tail"))
	_, agent, err := a.agentOf(r.Context(), c, id, "logs")
	if err != nil {
		return err
	}
	if q.Get("follow") == "" || q.Get("follow") == "0" {
		out, err := a.cfg.Agents.Logs(r.Context(), agent, id, tail)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, out)
		return nil
	}
	rc, err := a.cfg.Agents.FollowLogs(r.Context(), agent, id, tail)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rcw := http.NewResponseController(w)
	_ = rcw.SetWriteDeadline(time.Time{}) // a follow lasts as long as the client wants
	_ = rcw.Flush()                       // the client sees the 200 before the first line
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			_ = rcw.Flush()
		}
		if err != nil {
			return nil
		}
	}
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		AdminPass string `json:"adminPass"`
	}
	if err := decodeArg("changePassword", arg, &body); err != nil {
		return err
	}
	if body.AdminPass == "" || len(body.AdminPass) > 255 || strings.ContainsAny(body.AdminPass, ":\n\r") {
		return apierr.Invalidf("Invalid input for field/attribute adminPass. It must be 1-255 characters without ':' or line breaks.")
	}
	_, agent, err := a.agentOf(r.Context(), c, id, "changePassword", novastate.Active)
	if err != nil {
		return err
	}
	if err := a.cfg.Agents.SetPassword(r.Context(), agent, id, schema.SetPassword{User: "root", Password: body.AdminPass}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (a *API) syncStatus(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	srv, agent, err := a.agentOf(r.Context(), c, id, "berth-syncStatus")
	if err != nil {
		return err
	}
	obs, err := a.cfg.Agents.Sync(r.Context(), agent, id)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.ApplyObserved(r.Context(), srv.Host.String, *obs); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// checkPath accepts absolute, clean paths only.
func checkPath(p string) error {
	if p == "" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.Contains(p, "\x00") || len(p) > 4096 {
		return apierr.Invalidf("Invalid path %q: it must be absolute and clean (no '..', no trailing '/').", p)
	}
	return nil
}

func (a *API) putFile(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Path     string `json:"path"`
		Contents string `json:"contents"`
		Mode     string `json:"mode"`
	}
	if err := decodeArg("berth-putFile", arg, &body); err != nil {
		return err
	}
	if err := checkPath(body.Path); err != nil {
		return err
	}
	if body.Mode != "" {
		if m, err := strconv.ParseUint(body.Mode, 8, 32); err != nil || m > 0o7777 {
			return apierr.Invalidf("Invalid mode %q: it must be octal, e.g. 0644.", body.Mode)
		}
	}
	data, err := base64.StdEncoding.DecodeString(body.Contents)
	if err != nil {
		return apierr.Invalidf("contents must be base64.")
	}
	if len(data) > schema.MaxFileBytes {
		return &apierr.Error{Kind: apierr.TooLarge, Message: "The file is larger than 16 MiB."}
	}
	_, agent, err := a.agentOf(r.Context(), c, id, "berth-putFile", novastate.Active)
	if err != nil {
		return err
	}
	if err := a.cfg.Agents.PutFile(r.Context(), agent, id, body.Path, body.Mode, data); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) getFile(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Path string `json:"path"`
	}
	if err := decodeArg("berth-getFile", arg, &body); err != nil {
		return err
	}
	if err := checkPath(body.Path); err != nil {
		return err
	}
	_, agent, err := a.agentOf(r.Context(), c, id, "berth-getFile", novastate.Active)
	if err != nil {
		return err
	}
	data, err := a.cfg.Agents.GetFile(r.Context(), agent, id, body.Path)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"contents": base64.StdEncoding.EncodeToString(data), "size": len(data)})
	return nil
}

// createImage snapshots the app container into a new imagesvc image whose
// top layer's parent is the source image's top layer. The image record is
// made with the caller's token (so it is the caller's), the commit runs in
// the background, and the task clears when it ends.
func (a *API) createImage(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := decodeArg("createImage", arg, &body); err != nil {
		return err
	}
	if err := validName("name", body.Name); err != nil {
		return err
	}
	img, err := a.snapshot(r, c, id, "createImage", body.Name, body.Metadata, map[string]string{"image_type": "snapshot"}, nil)
	if err != nil {
		return err
	}
	a.imageAccepted(w, r, img.ID)
	return nil
}

// imageAccepted is createImage's and createBackup's 202: Location of the
// image, or from 2.45 {"image_id"} and no Location.
func (a *API) imageAccepted(w http.ResponseWriter, r *http.Request, imageID string) {
	if versionOf(r.Context()).AtLeast(Microversion{2, 45}) {
		httpx.WriteJSON(w, http.StatusAccepted, map[string]string{"image_id": imageID})
		return
	}
	w.Header().Set("Location", a.cfg.Images.BaseURL()+"/v2/images/"+imageID)
	w.WriteHeader(http.StatusAccepted)
}

// snapshot is createImage's and createBackup's work: an image record
// made with the caller's token (so it is the caller's) with the server's
// properties, kind's and meta, the task set, and the app container
// committed into it in the background; done, when set, runs after a
// successful commit.
func (a *API) snapshot(r *http.Request, c store.Caller, id, action, name string, meta, kind map[string]string,
	done func(ctx context.Context, token, imageID, dockerImageID string)) (*imageclient.Image, error) {
	if len(meta) > 128 {
		return nil, apierr.OverLimitf("Quota exceeded for metadata_items.")
	}
	srv, agent, err := a.agentOf(r.Context(), c, id, action,
		novastate.Active, novastate.Stopped, novastate.Paused, novastate.Suspended)
	if err != nil {
		return nil, err
	}
	token := identity(r.Context()).Token
	props := map[string]string{"instance_uuid": srv.ID, "base_image_ref": srv.ImageID,
		"owner_user_name": identity(r.Context()).UserName, "user_id": c.UserID}
	for k, v := range kind {
		props[k] = v
	}
	for k, v := range meta {
		if utf8.RuneCountInString(k) > 255 || utf8.RuneCountInString(v) > 255 {
			return nil, apierr.Invalidf("Invalid input for field/attribute metadata.")
		}
		props[k] = v
	}
	img, err := a.cfg.Images.Create(r.Context(), token, imageclient.NewImage{
		Name: name, ContainerFormat: "docker", DiskFormat: "raw", Visibility: "private", Properties: props,
	})
	if err != nil {
		return nil, err
	}
	t := store.Snapshot
	t.Action, t.Verb = action, action
	if _, err := a.cfg.Store.Act(r.Context(), c, id, t); err != nil {
		_ = a.cfg.Images.Delete(context.WithoutCancel(r.Context()), token, img.ID)
		return nil, err
	}
	bg := context.WithoutCancel(r.Context())
	go func() {
		res, err := a.cfg.Agents.Commit(bg, agent, id, schema.CommitRequest{ImageID: img.ID, ImageURL: a.cfg.Images.BaseURL()})
		msg := ""
		if err != nil {
			msg = "snapshot failed: " + err.Error()
			_ = a.cfg.Images.Delete(bg, token, img.ID)
			a.log.Warn("snapshot failed", "server_id", id, "image_id", img.ID, "err", err, "request_id", c.RequestID)
		} else {
			a.log.Info("snapshot done", "server_id", id, "image_id", img.ID, "docker_image_id", res.DockerImageID,
				"bytes", res.Size, "request_id", c.RequestID)
			if done != nil {
				done(bg, token, img.ID, res.DockerImageID)
			}
		}
		if err := a.cfg.Store.FinishTask(bg, id, novastate.TaskImageSnapshot, msg); err != nil {
			a.log.Error("finish snapshot task", "server_id", id, "err", err)
		}
	}()
	return img, nil
}

// consoleTTL is how long a serial console URL may be opened.
const consoleTTL = 10 * time.Minute

func (a *API) serialConsole(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Type string `json:"type"`
	}
	if err := decodeArg("os-getSerialConsole", arg, &body); err != nil {
		return err
	}
	if body.Type != "serial" {
		return apierr.Invalidf("Invalid input for field/attribute type. Value: %s. It must be serial.", body.Type)
	}
	u, err := a.consoleURL(r, c, id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"console": map[string]string{"type": "serial", "url": u}})
	return nil
}

// remoteConsole is POST /servers/{id}/remote-consoles (2.6+): only the
// serial protocol exists for a container set.
func (a *API) remoteConsole(w http.ResponseWriter, r *http.Request) error {
	if versionOf(r.Context()).Less(Microversion{2, 6}) {
		return apierr.NotFoundf("The resource could not be found.")
	}
	var body struct {
		RC *struct {
			Protocol string `json:"protocol"`
			Type     string `json:"type"`
		} `json:"remote_console"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.RC == nil {
		return apierr.Invalidf("Invalid input for field/attribute remote_console. 'remote_console' is a required property.")
	}
	switch {
	case body.RC.Protocol == "serial" && body.RC.Type == "serial":
	case body.RC.Protocol == "vnc" || body.RC.Protocol == "spice" || body.RC.Protocol == "rdp" || body.RC.Protocol == "mks":
		return apierr.Invalidf("Unavailable console type %s: a Berth server has a serial console only.", body.RC.Type)
	default:
		return apierr.Invalidf("Invalid input for field/attribute protocol. Value: %s.", body.RC.Protocol)
	}
	u, err := a.consoleURL(r, caller(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"remote_console": map[string]string{
		"protocol": "serial", "type": "serial", "url": u}})
	return nil
}

// consoleURL makes a single-use, short-lived websocket URL for a running
// server's interactive shell.
func (a *API) consoleURL(r *http.Request, c store.Caller, id string) (string, error) {
	if _, _, err := a.agentOf(r.Context(), c, id, "get console", novastate.Active); err != nil {
		return "", err
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(raw[:])
	if err := a.cfg.Store.CreateConsoleToken(r.Context(), id, token, consoleTTL); err != nil {
		return "", err
	}
	return "ws" + strings.TrimPrefix(a.baseURL(r), "http") + "/berth-console/?token=" + token, nil
}

// diagnostics is GET /servers/{id}/diagnostics (admin): the set's counters
// in the free-form shape Nova drivers return before 2.48.
func (a *API) diagnostics(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	_, agent, err := a.agentOf(r.Context(), caller(r), id, "get diagnostics",
		novastate.Active, novastate.Paused, novastate.Suspended, novastate.Resized)
	if err != nil {
		return err
	}
	d, err := a.cfg.Agents.Diagnostics(r.Context(), agent, id)
	if err != nil {
		return err
	}
	if versionOf(r.Context()).AtLeast(Microversion{2, 48}) {
		httpx.WriteJSON(w, http.StatusOK, standardDiagnostics(d))
		return nil
	}
	out := map[string]any{
		"state": d.State, "uptime": d.Uptime, "cpu0_time": d.CPUTimeNS,
		"memory": d.MemoryBytes / 1024, "memory-limit": d.MemoryLimit / 1024, "pids": d.Pids,
		// The writable layers' size: measured where the storage driver
		// cannot cap it (overlay2 on ext4), see docs/operations.md.
		"disk_bytes": d.DiskBytes,
	}
	for i, n := range d.NICs {
		p := "tap" + strconv.Itoa(i)
		out[p+"_rx"], out[p+"_rx_packets"], out[p+"_rx_drop"] = n.RxOctets, n.RxPackets, n.RxDrop
		out[p+"_tx"], out[p+"_tx_packets"], out[p+"_tx_drop"] = n.TxOctets, n.TxPackets, n.TxDrop
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// standardDiagnostics is the 2.48 diagnostics body. The set's cgroup
// counts CPU time for the whole set, so it is one cpu_details entry;
// memory is in MiB; there are no disks to count; fields Berth cannot
// measure (utilisation, errors, rates) are null, as Nova's drivers do.
func standardDiagnostics(d *schema.Diagnostics) map[string]any {
	nics := []map[string]any{}
	for _, n := range d.NICs {
		nics = append(nics, map[string]any{
			"mac_address": n.MAC, "rx_octets": n.RxOctets, "rx_packets": n.RxPackets, "rx_drop": n.RxDrop,
			"rx_errors": nil, "rx_rate": nil, "tx_octets": n.TxOctets, "tx_packets": n.TxPackets,
			"tx_drop": n.TxDrop, "tx_errors": nil, "tx_rate": nil,
		})
	}
	return map[string]any{
		"state": d.State, "driver": "berth", "hypervisor": "docker", "hypervisor_os": "linux",
		"uptime": d.Uptime, "config_drive": false, "num_cpus": 1, "num_disks": 0, "num_nics": len(nics),
		"cpu_details":    []map[string]any{{"id": 0, "time": d.CPUTimeNS, "utilisation": nil}},
		"memory_details": map[string]any{"maximum": d.MemoryLimit >> 20, "used": d.MemoryBytes >> 20},
		"disk_details":   []any{}, "nic_details": nics,
	}
}
