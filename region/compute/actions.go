package compute

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/imageclient"
	"berth/region/novastate"
	"berth/region/scheduler"
	"berth/region/store"
	"berth/schema"
)

// actionFunc handles one server action; arg is the action's value.
type actionFunc func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error

// actions maps Nova's (and Berth's) action names to handlers. Nova actions
// Berth has not built answer 501 notImplemented rather than pretending.
func (a *API) actions() map[string]actionFunc {
	simple := func(t store.Transition) actionFunc {
		return func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
			if !isNullArg(arg) {
				return apierr.Invalidf("Invalid input for field/attribute %s. Value: %s. None is required.", t.Verb, string(arg))
			}
			return a.act(w, r, c, id, t)
		}
	}
	notYet := func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
		if _, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id); err != nil {
			return err
		}
		return apierr.NotImplementedf("This action is not implemented by Berth yet.")
	}
	m := map[string]actionFunc{
		"os-start": simple(store.Start), "os-stop": simple(store.Stop),
		"pause": simple(store.Pause), "unpause": simple(store.Unpause),
		"suspend": simple(store.Suspend), "resume": simple(store.Resume),
		"lock": a.lockAction, "unlock": simple(store.Unlock),
		"confirmResize": simple(store.ConfirmResize), "revertResize": simple(store.RevertResize),
		"reboot": a.reboot, "rebuild": a.rebuild, "resize": a.resize,
		"createImage": a.createImage, "changePassword": a.changePassword,
		"os-getConsoleOutput": a.consoleOutput, "os-getSerialConsole": a.serialConsole,
		"os-resetState": a.resetState, "forceDelete": a.forceDelete,
		"berth-syncStatus": a.syncStatus, "berth-putFile": a.putFile, "berth-getFile": a.getFile,
		"addSecurityGroup": a.changeServerGroup(true), "removeSecurityGroup": a.changeServerGroup(false),
		"migrate": a.move(false), "evacuate": a.move(true),
	}
	m["createBackup"] = a.createBackup
	m["shelve"], m["unshelve"], m["shelveOffload"] = a.shelve, a.unshelve, a.shelveOffload
	for _, name := range []string{"restore", "os-getVNCConsole", "os-getSPICEConsole", "os-getRDPConsole",
		"injectNetworkInfo", "resetNetwork"} {
		m[name] = notYet
	}
	// Not built on purpose (docs/api.md): the reason is in the fault.
	never := func(why string) actionFunc {
		return func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
			if _, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id); err != nil {
				return err
			}
			return apierr.NotImplementedf("%s", why)
		}
	}
	m["os-migrateLive"] = never("Live migration is not supported: a container set's processes cannot move to another host while running. Use migrate (the set restarts on the new host with the same id and addresses).")
	m["rescue"] = never("Rescue is not supported: a container set has no boot disk to rescue. Use rebuild, or berth-getFile/berth-putFile on the app container.")
	m["unrescue"] = m["rescue"]
	// The nova-network proxies are gone from 2.44 (404, as Nova answers
	// for a method the version lacks).
	for _, name := range []string{"addFixedIp", "removeFixedIp", "addFloatingIp", "removeFloatingIp"} {
		m[name] = func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
			if versionOf(r.Context()).AtLeast(Microversion{2, 44}) {
				return apierr.NotFoundf("The resource could not be found.")
			}
			return notYet(w, r, c, id, arg)
		}
	}
	m["trigger_crash_dump"] = a.triggerCrashDump
	return m
}

func isNullArg(arg json.RawMessage) bool {
	s := string(arg)
	return s == "null" || s == "{}" || s == ""
}

// triggerCrashDump (2.17) asks for an NMI; a container set has no kernel
// of its own to dump, which Nova reports as 400 for drivers without it.
func (a *API) triggerCrashDump(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if versionOf(r.Context()).Less(Microversion{2, 17}) {
		return apierr.Invalidf("There is no such action: trigger_crash_dump")
	}
	if !isNullArg(arg) {
		return apierr.Invalidf("Invalid input for field/attribute trigger_crash_dump. Value: %s. None is required.", string(arg))
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
	if err != nil {
		return err
	}
	if srv.VMState != novastate.Active && srv.VMState != novastate.Paused && srv.VMState != novastate.Resized {
		return apierr.Conflictf("Cannot 'trigger_crash_dump' instance %s while it is in vm_state %s", id, srv.VMState)
	}
	return apierr.Invalidf("Triggering crash dump is not supported")
}

func (a *API) serverAction(w http.ResponseWriter, r *http.Request) error {
	var body map[string]json.RawMessage
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes+schema.MaxFileBytes*4/3+4096, false, &body); err != nil {
		return err
	}
	if len(body) != 1 {
		return apierr.Invalidf("Malformed request body: exactly one action is required.")
	}
	for name, arg := range body {
		h, ok := a.actionTable[name]
		if !ok {
			return apierr.Invalidf("There is no such action: %s", name)
		}
		return h(w, r, caller(r), mux.Vars(r)["id"], arg)
	}
	return nil
}

// act applies a transition and answers 202.
func (a *API) act(w http.ResponseWriter, r *http.Request, c store.Caller, id string, t store.Transition) error {
	srv, err := a.cfg.Store.Act(r.Context(), c, id, t)
	if err != nil {
		return err
	}
	a.log.Info("server action", "action", t.Action, "server_id", srv.ID, "host", srv.Host.String,
		"request_id", c.RequestID)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// decodeArg decodes an action's argument strictly.
func decodeArg(name string, arg json.RawMessage, v any) error {
	if isNullArg(arg) && string(arg) != "{}" {
		return apierr.Invalidf("Invalid input for field/attribute %s. Value: None. None is not of type 'object'.", name)
	}
	dec := json.NewDecoder(bytes.NewReader(arg))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.Invalidf("Invalid input for field/attribute %s: %v.", name, err)
	}
	return nil
}

func (a *API) lockAction(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if !isNullArg(arg) {
		return apierr.Invalidf("Invalid input for field/attribute lock. Value: %s. None is required.", string(arg))
	}
	t := store.Lock
	t.Mutate = func(ctx context.Context, tx *sqlx.Tx, srv *store.Server) error {
		_, err := tx.ExecContext(ctx, `UPDATE servers SET locked = true, locked_by = $2 WHERE id = $1`, srv.ID,
			map[bool]string{true: "admin", false: "owner"}[c.Admin])
		return err
	}
	return a.act(w, r, c, id, t)
}

func (a *API) reboot(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		Type string `json:"type"`
	}
	if err := decodeArg("reboot", arg, &body); err != nil {
		return err
	}
	switch strings.ToUpper(body.Type) {
	case "SOFT":
		return a.act(w, r, c, id, store.Reboot(false))
	case "HARD":
		return a.act(w, r, c, id, store.Reboot(true))
	}
	return apierr.Invalidf("Invalid input for field/attribute type. Value: %s. It must be SOFT or HARD.", body.Type)
}

// bootableImage fetches an image with the caller's token and checks Berth
// can boot it.
func (a *API) bootableImage(r *http.Request, ref string) (*imageclient.Image, error) {
	imageID := refID(ref)
	img, err := a.cfg.Images.Get(r.Context(), identity(r.Context()).Token, imageID)
	if apierr.Is(err, apierr.NotFound) {
		return nil, apierr.Invalidf("Image %s could not be found.", imageID)
	} else if err != nil {
		return nil, err
	}
	switch {
	case img.Status != "active":
		return nil, apierr.Invalidf("Image %s is not active.", imageID)
	case img.ContainerFormat != "docker" || img.DockerImageID == "":
		return nil, apierr.Invalidf("Image %s is not a container image (container_format docker); Berth boots container images only.", imageID)
	}
	return img, nil
}

func (a *API) rebuild(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		ImageRef          string               `json:"imageRef"`
		Name              *string              `json:"name"`
		AdminPass         string               `json:"adminPass"`
		Metadata          map[string]string    `json:"metadata"`
		PreserveEphemeral bool                 `json:"preserve_ephemeral"`
		DiskConfig        string               `json:"OS-DCF:diskConfig"`
		AccessIPv4        string               `json:"accessIPv4"`
		AccessIPv6        string               `json:"accessIPv6"`
		Personality       []schema.Personality `json:"personality"`
		Description       *string              `json:"description"`
		KeyName           *string              `json:"key_name"`
		UserData          *string              `json:"user_data"`
		TrustedCerts      *[]string            `json:"trusted_image_certificates"`
	}
	if err := decodeArg("rebuild", arg, &body); err != nil {
		return err
	}
	mv := versionOf(r.Context())
	for field, unexpected := range map[string]bool{
		"description":                body.Description != nil && mv.Less(Microversion{2, 19}),
		"key_name":                   body.KeyName != nil && mv.Less(Microversion{2, 54}),
		"user_data":                  body.UserData != nil && mv.Less(Microversion{2, 57}),
		"personality":                body.Personality != nil && mv.AtLeast(Microversion{2, 57}),
		"trusted_image_certificates": body.TrustedCerts != nil && mv.Less(Microversion{2, 63}),
	} {
		if unexpected {
			return apierr.Invalidf("Invalid input for field/attribute rebuild. Additional properties are not allowed ('%s' was unexpected)", field)
		}
	}
	if body.Description != nil && utf8.RuneCountInString(*body.Description) > 255 {
		return apierr.Invalidf("Invalid input for field/attribute description. It must be at most 255 characters long.")
	}
	if err := noTrustedCerts(body.TrustedCerts); err != nil {
		return err
	}
	if body.UserData != nil && *body.UserData != "" {
		if len(*body.UserData) > 65535 {
			return apierr.Invalidf("User data too large. User data must be no larger than 65535 bytes once base64 encoded.")
		}
		if _, err := base64.StdEncoding.DecodeString(*body.UserData); err != nil {
			return apierr.Invalidf("User data needs to be valid base 64.")
		}
	}
	if body.ImageRef == "" {
		return apierr.Invalidf("Invalid input for field/attribute rebuild. 'imageRef' is a required property.")
	}
	name := ""
	if body.Name != nil {
		if err := validName("name", *body.Name); err != nil {
			return err
		}
		name = *body.Name
	}
	img, err := a.bootableImage(r, body.ImageRef)
	if err != nil {
		return err
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
	if err != nil {
		return err
	}
	if img.MinRAM > srv.RAMMB || img.MinDisk > srv.DiskGB {
		return apierr.Invalidf("Flavor's memory or disk is too small for requested image.")
	}
	t := store.Rebuild(img.ID, img.DockerImageID, name)
	if body.Description != nil || body.KeyName != nil || body.UserData != nil {
		// key_name null removes the key; a name replaces it (2.54).
		keyChange, keyName, keys := body.KeyName != nil, "", ""
		if body.KeyName != nil && *body.KeyName != "" {
			k, err := a.cfg.Store.FindKeypair(r.Context(), srv.UserID, *body.KeyName)
			if apierr.Is(err, apierr.NotFound) {
				return apierr.Invalidf("Invalid key_name provided.")
			} else if err != nil {
				return err
			}
			keyName, keys = k.Name, strings.TrimRight(k.PublicKey, "\r\n")+"\n"
		}
		rebuild := t.Mutate
		t.Mutate = func(ctx context.Context, tx *sqlx.Tx, s *store.Server) error {
			if rebuild != nil {
				if err := rebuild(ctx, tx, s); err != nil {
					return err
				}
			}
			// user_data (2.57; null removes it) is what the rebuilt app
			// container's first start runs, as on create.
			_, err := tx.ExecContext(ctx, `UPDATE servers SET
				description = CASE WHEN $2 THEN $3 ELSE description END,
				key_name = CASE WHEN $4 THEN NULLIF($5, '') ELSE key_name END,
				authorized_keys = CASE WHEN $4 THEN NULLIF($6, '') ELSE authorized_keys END,
				user_data = CASE WHEN $7 THEN NULLIF($8, '') ELSE user_data END
				WHERE id = $1`, s.ID, body.Description != nil, body.Description, keyChange, keyName, keys,
				body.UserData != nil, deref(body.UserData))
			return err
		}
	}
	srv, err = a.cfg.Store.Act(r.Context(), c, id, t)
	if err != nil {
		return err
	}
	a.log.Info("server action", "action", "rebuild", "server_id", id, "image", img.ID, "request_id", c.RequestID)
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"server": a.serverView(r, srv)})
	return nil
}

func (a *API) resize(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	var body struct {
		FlavorRef  schema.FlexString `json:"flavorRef"`
		DiskConfig string            `json:"OS-DCF:diskConfig"`
	}
	if err := decodeArg("resize", arg, &body); err != nil {
		return err
	}
	if body.FlavorRef == "" {
		return apierr.Invalidf("Invalid input for field/attribute resize. 'flavorRef' is a required property.")
	}
	f, err := a.findFlavor(r, refID(string(body.FlavorRef)))
	if apierr.Is(err, apierr.NotFound) {
		return apierr.Invalidf("Flavor %s could not be found.", refID(string(body.FlavorRef)))
	} else if err != nil {
		return err
	}
	return a.act(w, r, c, id, store.Resize(f))
}

func (a *API) resetState(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if !c.Admin {
		return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.")
	}
	var body struct {
		State string `json:"state"`
	}
	if err := decodeArg("os-resetState", arg, &body); err != nil {
		return err
	}
	if body.State != novastate.Active && body.State != novastate.Error {
		return apierr.Invalidf("Invalid input for field/attribute state. Value: %s. It must be active or error.", body.State)
	}
	return a.act(w, r, c, id, store.ResetState(body.State))
}

func (a *API) forceDelete(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if err := a.cfg.Store.DeleteServer(r.Context(), c, id, a.cfg.HostGrace); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

type actionView struct {
	Action       string      `json:"action"`
	InstanceUUID string      `json:"instance_uuid"`
	Message      *string     `json:"message"`
	ProjectID    string      `json:"project_id"`
	RequestID    string      `json:"request_id"`
	StartTime    string      `json:"start_time"`
	UserID       string      `json:"user_id"`
	Events       []eventView `json:"events,omitempty"`
	UpdatedAt    *string     `json:"updated_at,omitempty"` // 2.58
}

type eventView struct {
	Event      string  `json:"event"`
	StartTime  string  `json:"start_time"`
	FinishTime *string `json:"finish_time"`
	Result     *string `json:"result"`
	Traceback  *string `json:"traceback"`
	Host       *string `json:"host,omitempty"`   // 2.62, admin
	HostID     *string `json:"hostId,omitempty"` // 2.62
}

func viewAction(act store.Action, withEvents bool) actionView {
	v := actionView{
		Action: act.Action, InstanceUUID: act.ServerID, ProjectID: act.ProjectID, RequestID: act.RequestID,
		StartTime: act.StartTime.UTC().Format(usageFormat), UserID: act.UserID,
	}
	if act.Message.Valid {
		m := act.Message.String
		v.Message = &m
	}
	if withEvents {
		v.Events = []eventView{}
		for _, e := range act.Events {
			ev := eventView{Event: e.Event, StartTime: e.StartTime.UTC().Format(usageFormat)}
			if e.FinishTime != nil {
				t := e.FinishTime.UTC().Format(usageFormat)
				ev.FinishTime = &t
			}
			if e.Result.Valid {
				s := e.Result.String
				ev.Result = &s
			}
			if e.Traceback.Valid {
				s := e.Traceback.String
				ev.Traceback = &s
			}
			v.Events = append(v.Events, ev)
		}
	}
	return v
}

func (a *API) listInstanceActions(w http.ResponseWriter, r *http.Request) error {
	mv := versionOf(r.Context())
	acts, err := a.cfg.Store.ListActions(r.Context(), caller(r).Scope, mux.Vars(r)["id"], mv.AtLeast(Microversion{2, 21}))
	if err != nil {
		return err
	}
	body := map[string]any{}
	if mv.AtLeast(Microversion{2, 58}) {
		if acts, body, err = a.pageActions(r, acts); err != nil {
			return err
		}
	}
	out := make([]actionView, len(acts))
	for i, act := range acts {
		out[i] = a.actionView(r, act, false)
	}
	body["instanceActions"] = out
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

// pageActions applies 2.58's limit, marker (a request id) and
// changes-since and 2.66's changes-before (on updated_at) to a server's
// actions, newest first, and adds the next link of a full page.
func (a *API) pageActions(r *http.Request, acts []store.Action) ([]store.Action, map[string]any, error) {
	q := r.URL.Query()
	limit, marker, err := pageParams(q)
	if err != nil {
		return nil, nil, err
	}
	since, before, err := changesWindow(r)
	if err != nil {
		return nil, nil, err
	}
	if marker != "" {
		i := slices.IndexFunc(acts, func(x store.Action) bool { return x.RequestID == marker })
		if i < 0 {
			return nil, nil, apierr.Invalidf("Marker %s could not be found.", marker)
		}
		acts = acts[i+1:]
	}
	acts = slices.DeleteFunc(slices.Clone(acts), func(x store.Action) bool {
		return since != nil && x.UpdatedAt.Before(*since) || before != nil && x.UpdatedAt.After(*before)
	})
	body := map[string]any{}
	if len(acts) > limit {
		acts = acts[:limit]
	}
	if len(acts) > 0 && len(acts) == limit && q.Get("limit") != "" {
		body["links"] = nextLink(a.baseURL(r), r.URL.Path, q, acts[len(acts)-1].RequestID)
	}
	return acts, body, nil
}

// changesWindow reads changes-since and (2.66) changes-before; before
// earlier than since is 400, as in Nova.
func changesWindow(r *http.Request) (since, before *time.Time, err error) {
	q := r.URL.Query()
	for key, dst := range map[string]**time.Time{"changes-since": &since, "changes-before": &before} {
		s := q.Get(key)
		if s == "" {
			continue
		}
		if key == "changes-before" && versionOf(r.Context()).Less(Microversion{2, 66}) {
			continue
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, nil, apierr.Invalidf("Invalid input for query parameters %s. Value: %s. It must be an ISO 8601 date-time.", key, s)
		}
		*dst = &t
	}
	if since != nil && before != nil && before.Before(*since) {
		return nil, nil, apierr.Invalidf("The value of changes-since must be less than or equal to changes-before.")
	}
	return since, before, nil
}

// actionView renders an action at the request's microversion.
func (a *API) actionView(r *http.Request, act store.Action, withEvents bool) actionView {
	v := viewAction(act, withEvents)
	mv := versionOf(r.Context())
	if mv.AtLeast(Microversion{2, 58}) {
		u := act.UpdatedAt.UTC().Format(usageFormat)
		v.UpdatedAt = &u
	}
	if mv.AtLeast(Microversion{2, 62}) {
		admin := identity(r.Context()).IsAdmin()
		for i, e := range act.Events {
			if i >= len(v.Events) {
				break
			}
			h := hostID(act.ProjectID, e.Host.String)
			v.Events[i].HostID = &h
			if admin {
				host := e.Host.String
				v.Events[i].Host = &host
			}
		}
	}
	return v
}

func (a *API) showInstanceAction(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	mv := versionOf(r.Context())
	acts, err := a.cfg.Store.ListActions(r.Context(), caller(r).Scope, vars["id"], mv.AtLeast(Microversion{2, 21}))
	if err != nil {
		return err
	}
	// Events are admin-only before 2.51; from 2.51 everyone sees them and
	// only admins see tracebacks (Nova's default policy).
	admin := identity(r.Context()).IsAdmin()
	for _, act := range acts {
		if act.RequestID == vars["req"] {
			v := a.actionView(r, act, admin || mv.AtLeast(Microversion{2, 51}))
			if !admin {
				for i := range v.Events {
					v.Events[i].Traceback = nil
				}
			}
			httpx.WriteJSON(w, http.StatusOK, map[string]any{"instanceAction": v})
			return nil
		}
	}
	return apierr.NotFoundf("Action for request_id %s on instance %s not found", vars["req"], vars["id"])
}

// move is the admin's migrate (null at 2.1) and evacuate ({"host"?,
// "onSharedStorage", "adminPass"?}): the set is re-created on another
// host with the same id, ports and addresses.
func (a *API) move(evacuate bool) actionFunc {
	return func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
		name := map[bool]string{false: "migrate", true: "evacuate"}[evacuate]
		if !c.Admin {
			return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-%s-server to be performed.", name)
		}
		host := ""
		if evacuate {
			var body struct {
				Host            string `json:"host"`
				OnSharedStorage *bool  `json:"onSharedStorage"`
				AdminPass       string `json:"adminPass"`
				Force           *bool  `json:"force"`
			}
			if err := decodeArg(name, arg, &body); err != nil {
				return err
			}
			// force (2.29) skips the scheduler's checks of host; Berth's
			// placement always checks room, so force only names the host.
			if body.Force != nil && versionOf(r.Context()).Less(Microversion{2, 29}) {
				return apierr.Invalidf("Invalid input for field/attribute evacuate. Additional properties are not allowed ('force' was unexpected)")
			}
			if body.AdminPass != "" {
				return apierr.Invalidf("Berth cannot set a password on evacuate; use changePassword.")
			}
			host = body.Host
		} else if versionOf(r.Context()).AtLeast(Microversion{2, 56}) && string(arg) != "null" {
			// 2.56: {"host": "name"} names the target (null: the scheduler's).
			var body struct {
				Host *string `json:"host"`
			}
			if err := decodeArg(name, arg, &body); err != nil {
				return err
			}
			if body.Host != nil {
				host = *body.Host
				if host == "" {
					return apierr.Invalidf("Invalid input for field/attribute host. It must be 1 to 255 characters long.")
				}
			}
		} else if !isNullArg(arg) {
			return apierr.Invalidf("Invalid input for field/attribute migrate. Value: %s. None is required.", string(arg))
		}
		srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
		if err != nil {
			return err
		}
		if !evacuate && host != "" && host == srv.Host.String {
			return apierr.Invalidf("The target host can't be the same one.")
		}
		candidates, _, err := a.rank(r.Context(), scheduler.Request{VCPUs: srv.VCPUs, MemoryMB: srv.RAMMB,
			DiskGB: srv.DiskGB, ForceHost: host, Now: time.Now(), Grace: a.cfg.HostGrace})
		if err != nil {
			return err
		}
		moved, err := a.cfg.Store.Move(r.Context(), c, id, candidates, evacuate, a.cfg.HostGrace)
		if err != nil {
			return err
		}
		a.log.Info("server moving", "action", name, "server_id", id, "from", srv.Host.String, "to", moved.Host.String,
			"request_id", c.RequestID)
		switch {
		case evacuate && versionOf(r.Context()).Less(Microversion{2, 14}):
			httpx.WriteJSON(w, http.StatusOK, map[string]string{"adminPass": ""})
		case evacuate:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
		return nil
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// noTrustedCerts: 2.63's trusted_image_certificates ask for image
// signature verification, which imagesvc does not do; an empty list or
// null asks for nothing.
func noTrustedCerts(certs *[]string) error {
	if certs != nil && len(*certs) > 0 {
		return apierr.Invalidf("Image signature certificate validation is not supported: imagesvc does not sign images.")
	}
	return nil
}
