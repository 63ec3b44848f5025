package compute

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/novastate"
	"berth/region/scheduler"
	"berth/region/store"
	"berth/schema"
)

// createBody is POST /servers: Nova's schema rejects unknown top-level keys
// except the scheduler hints.
type createBody struct {
	Server      *schema.ServerCreate `json:"server"`
	Hints       map[string]any       `json:"os:scheduler_hints,omitempty"`
	LegacyHints map[string]any       `json:"OS-SCH-HNT:scheduler_hints,omitempty"`
}

// validName applies Nova's name rules: 1-255 characters, printable, no
// leading or trailing whitespace.
func validName(field, s string) error {
	n := utf8.RuneCountInString(s)
	if n < 1 || n > 255 {
		return apierr.Invalidf("Invalid input for field/attribute %s. Value: %s. It must be 1 to 255 characters long.", field, s)
	}
	if strings.TrimSpace(s) != s {
		return apierr.Invalidf("Invalid input for field/attribute %s. Value: %s. Leading or trailing whitespace is not allowed.", field, s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return apierr.Invalidf("Invalid input for field/attribute %s. Value: %q. It must consist of printable characters.", field, s)
		}
	}
	return nil
}

// refID takes the id from a ref that may be a URL (Nova accepts both).
func refID(ref string) string {
	ref = strings.TrimRight(ref, "/")
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// networksOf resolves the "networks" of a create request: nothing or
// "auto" is the default network, "none" is no port, and a list names
// networks (visible to the caller), fixed IPs or existing ports.
func (a *API) networksOf(r *http.Request, raw json.RawMessage) ([]store.NetworkRequest, error) {
	def := []store.NetworkRequest{{NetworkID: a.cfg.DefaultNetworkID}}
	mv := versionOf(r.Context())
	if len(raw) == 0 || string(raw) == "null" {
		if mv.AtLeast(Microversion{2, 37}) {
			return nil, apierr.Invalidf("Invalid input for field/attribute server. 'networks' is a required property.")
		}
		return def, nil
	}
	var word string
	if json.Unmarshal(raw, &word) == nil {
		// "auto" and "none" came with 2.37; before, networks is a list.
		if mv.Less(Microversion{2, 37}) {
			return nil, apierr.Invalidf("Invalid input for field/attribute networks. Value: %s. '%s' is not of type 'array'.", word, word)
		}
		switch word {
		case "auto":
			return def, nil
		case "none":
			return nil, nil
		}
		return nil, apierr.Invalidf("Invalid input for field/attribute networks. Value: %s. It must be a list, \"auto\" or \"none\".", word)
	}
	var nets []schema.ServerNetwork
	if err := json.Unmarshal(raw, &nets); err != nil {
		return nil, apierr.Invalidf("Invalid input for field/attribute networks. It must be a list of objects.")
	}
	sc := caller(r).Scope
	var out []store.NetworkRequest
	for _, n := range nets {
		// Device tags: 2.32-2.36, then again from 2.42 (Nova's history).
		if n.Tag != "" && (mv.Less(Microversion{2, 32}) || mv.AtLeast(Microversion{2, 37}) && mv.Less(Microversion{2, 42})) {
			return nil, apierr.Invalidf("Invalid input for field/attribute networks. Additional properties are not allowed ('tag' was unexpected)")
		}
		if n.UUID != "" && mv.AtLeast(Microversion{2, 37}) && uuid.Validate(n.UUID) != nil {
			return nil, apierr.Invalidf("Invalid input for field/attribute uuid. Value: %s. '%s' is not a 'uuid'", n.UUID, n.UUID)
		}
		switch {
		case n.Port != "":
			p, err := a.cfg.Store.FindPort(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID}, n.Port)
			if err != nil {
				return nil, apierr.Invalidf("Port %s could not be found.", n.Port)
			}
			if p.ServerID != "" {
				return nil, apierr.Conflictf("Port %s is still in use.", n.Port)
			}
			out = append(out, store.NetworkRequest{PortID: n.Port})
		case n.UUID == "":
			return nil, apierr.Invalidf("Bad networks format: network uuid is not in proper format.")
		default:
			if _, err := a.cfg.Store.FindNetwork(r.Context(), sc, n.UUID); err != nil {
				return nil, apierr.Invalidf("Network %s could not be found.", n.UUID)
			}
			if n.FixedIP != "" && net.ParseIP(n.FixedIP) == nil {
				return nil, apierr.Invalidf("Invalid fixed IP address (%s)", n.FixedIP)
			}
			out = append(out, store.NetworkRequest{NetworkID: n.UUID, FixedIP: n.FixedIP})
		}
	}
	return out, nil
}

func (a *API) createServer(w http.ResponseWriter, r *http.Request) error {
	var body createBody
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	sc := body.Server
	if sc == nil {
		return apierr.Invalidf("Invalid input for field/attribute server. 'server' is a required property.")
	}
	if err := validName("name", sc.Name); err != nil {
		return err
	}
	v := versionOf(r.Context())
	for field, unexpected := range map[string]bool{
		"description":                sc.Description != nil && v.Less(Microversion{2, 19}),
		"tags":                       sc.Tags != nil && v.Less(Microversion{2, 52}),
		"hostname":                   sc.HostName != "" && v.Less(Microversion{2, 90}),
		"personality":                sc.Personality != nil && v.AtLeast(Microversion{2, 57}),
		"trusted_image_certificates": sc.TrustedCerts != nil && v.Less(Microversion{2, 63}),
	} {
		if unexpected {
			return apierr.Invalidf("Additional properties are not allowed ('%s' was unexpected)", field)
		}
	}
	if sc.Description != nil && utf8.RuneCountInString(*sc.Description) > 255 {
		return apierr.Invalidf("Invalid input for field/attribute description. It must be at most 255 characters long.")
	}
	if err := validTags(sc.Tags); err != nil {
		return err
	}
	if err := noTrustedCerts(sc.TrustedCerts); err != nil {
		return err
	}
	switch {
	case len(sc.BlockDevices) > 0:
		return apierr.Invalidf("Booting from a block device is not supported: a Berth server is a container set booted from an image.")
	case sc.ImageRef == "":
		return apierr.Invalidf("Invalid input for field/attribute imageRef. 'imageRef' is a required property.")
	case sc.FlavorRef == "":
		return apierr.Invalidf("Invalid input for field/attribute flavorRef. 'flavorRef' is a required property.")
	}
	if sc.UserData != "" {
		if len(sc.UserData) > 65535 {
			return apierr.Invalidf("User data too large. User data must be no larger than 65535 bytes once base64 encoded.")
		}
		if _, err := base64.StdEncoding.DecodeString(sc.UserData); err != nil {
			return apierr.Invalidf("User data needs to be valid base 64.")
		}
	}
	files, err := personalityFiles(sc.Personality)
	if err != nil {
		return err
	}
	if len(sc.Metadata) > 128 {
		return apierr.OverLimitf("Quota exceeded for metadata_items: Requested %d, but already used 0 of 128 metadata_items", len(sc.Metadata))
	}
	for k, v := range sc.Metadata {
		if k == "" || utf8.RuneCountInString(k) > 255 || utf8.RuneCountInString(v) > 255 {
			return apierr.Invalidf("Invalid input for field/attribute metadata. Keys must be 1-255 and values 0-255 characters long.")
		}
	}
	minCount, maxCount := 1, 1
	if sc.MinCount != nil {
		minCount = *sc.MinCount
	}
	if sc.MaxCount != nil {
		maxCount = *sc.MaxCount
	} else if sc.MinCount != nil {
		maxCount = minCount
	}
	if minCount < 1 || maxCount < 1 || minCount > maxCount || maxCount > 100 {
		return apierr.Invalidf("min_count and max_count must be 1 to 100 with min_count <= max_count.")
	}

	id := identity(r.Context())
	forceHost := ""
	az := "nova"
	if sc.AvailabilityZone != "" {
		zone, host, _ := strings.Cut(sc.AvailabilityZone, ":")
		if zone != "" && zone != "nova" {
			return apierr.Invalidf("The requested availability zone is not available")
		}
		if host != "" {
			if !id.IsAdmin() {
				return apierr.Forbiddenf("Policy doesn't allow os_compute_api:servers:create:forced_host to be performed.")
			}
			forceHost, _, _ = strings.Cut(host, ":")
		}
	}
	networks, err := a.networksOf(r, sc.Networks)
	if err != nil {
		return err
	}
	created := []schema.SecurityGroupRef{{Name: "default"}}
	if len(sc.SecurityGroups) > 0 {
		// The named groups go on every port the server gets (not on
		// ports passed in, which keep their own), as Nova asks Neutron.
		names := make([]string, 0, len(sc.SecurityGroups))
		created = created[:0]
		for _, g := range sc.SecurityGroups {
			if !slices.Contains(names, g.Name) {
				names = append(names, g.Name)
				created = append(created, schema.SecurityGroupRef{Name: g.Name})
			}
		}
		ids, err := a.cfg.Store.ResolveSecurityGroups(r.Context(), id.ProjectID, names)
		if apierr.Is(err, apierr.NotFound) {
			// Nova answers a missing group on create with 400.
			return apierr.Invalidf("%s", apierr.As(err).Message)
		} else if err != nil {
			return err
		}
		for i := range networks {
			networks[i].SecurityGroups = ids
		}
	}
	groupID := ""
	hints := body.Hints
	if hints == nil {
		hints = body.LegacyHints
	}
	if g, ok := hints["group"]; ok {
		gs, _ := g.(string)
		if _, err := a.cfg.Store.FindServerGroup(r.Context(), store.Scope{ProjectID: id.ProjectID}, gs); err != nil {
			return apierr.Invalidf("Invalid input for field/attribute group. Value: %v. No such server group.", g)
		}
		groupID = gs
	}
	authorizedKeys := ""
	if sc.KeyName != "" {
		k, err := a.cfg.Store.FindKeypair(r.Context(), id.UserID, sc.KeyName)
		if apierr.Is(err, apierr.NotFound) {
			return apierr.Invalidf("Invalid key_name provided.")
		} else if err != nil {
			return err
		}
		authorizedKeys = strings.TrimRight(k.PublicKey, "\r\n") + "\n"
	}

	flavor, err := a.findFlavor(r, refID(string(sc.FlavorRef)))
	if apierr.Is(err, apierr.NotFound) {
		return apierr.Invalidf("Flavor %s could not be found.", refID(string(sc.FlavorRef)))
	} else if err != nil {
		return err
	}
	img, err := a.bootableImage(r, sc.ImageRef)
	if err != nil {
		return err
	}
	switch {
	case img.MinRAM > flavor.RAMMB:
		return apierr.Invalidf("Flavor's memory is too small for requested image.")
	case img.MinDisk > flavor.DiskGB:
		return apierr.Invalidf("Flavor's disk is too small for requested image.")
	}

	reservation := reservationID()
	var first *store.Server
	for i := 1; i <= maxCount; i++ {
		name := sc.Name
		if maxCount > 1 {
			name = fmt.Sprintf("%s-%d", sc.Name, i)
		}
		srv, err := a.place(r, store.NewServer{
			ID: uuid.NewString(), ProjectID: id.ProjectID, UserID: id.UserID, Name: name,
			Description: sc.Description, ImageID: img.ID, DockerImageID: img.DockerImageID, Flavor: flavor,
			Metadata: sc.Metadata, AvailabilityZone: az, AccessIPv4: sc.AccessIPv4, AccessIPv6: sc.AccessIPv6,
			Networks: networks, RequestID: httpx.RequestID(r.Context()), RetryKey: store.RetryKey(httpx.ClientRequestID(r.Context()), i),
			KeyName: sc.KeyName, AuthorizedKeys: authorizedKeys, UserData: sc.UserData, Files: files,
			GroupID: groupID, ReservationID: reservation, Tags: sc.Tags,
		}, forceHost)
		if err != nil {
			return err
		}
		if first == nil {
			first = srv
		}
	}
	if sc.ReturnResID {
		// (The first server's: a retried create returns the first one's.)
		httpx.WriteJSON(w, http.StatusAccepted, map[string]string{"reservation_id": first.ReservationID})
		return nil
	}
	links := a.serverLinks(r, first.ID)
	w.Header().Set("Location", links[0].Href)
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"server": schema.ServerCreated{
		ID: first.ID, Links: links, DiskConfig: "MANUAL",
		SecurityGroups: created,
	}})
	return nil
}

// reservationID makes Nova's r-xxxxxxxx.
func reservationID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "r-" + string(b)
}

// place schedules and records a new server (or set).
func (a *API) place(r *http.Request, ns store.NewServer, forceHost string) (*store.Server, error) {
	f := ns.Flavor
	srv, err := a.cfg.Store.PlaceServer(r.Context(), ns, scheduler.Request{
		VCPUs: f.VCPUs, MemoryMB: f.RAMMB, DiskGB: f.DiskGB,
		ForceHost: forceHost, Now: time.Now(), Grace: a.cfg.HostGrace,
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("server created", "server_id", srv.ID, "host", srv.Host.String, "status", srv.Status(),
		"request_id", ns.RequestID)
	return srv, nil
}

// personalityFiles checks personality files against Nova's default limits
// (5 files, 255-byte paths, 10 KiB contents; over is 403 overLimit).
func personalityFiles(ps []schema.Personality) ([]schema.SetFile, error) {
	if len(ps) > 5 {
		return nil, apierr.OverLimitf("Personality file limit exceeded")
	}
	var out []schema.SetFile
	for _, p := range ps {
		if len(p.Path) > 255 {
			return nil, apierr.OverLimitf("Personality file path exceeds maximum 255")
		}
		if err := checkPath(p.Path); err != nil {
			return nil, err
		}
		data, err := base64.StdEncoding.DecodeString(p.Contents)
		if err != nil {
			return nil, apierr.Invalidf("Personality content for %s cannot be decoded", p.Path)
		}
		if len(data) > 10240 {
			return nil, apierr.OverLimitf("Personality file content exceeds maximum 10240")
		}
		out = append(out, schema.SetFile{Path: p.Path, Contents: p.Contents})
	}
	return out, nil
}

func (a *API) listServers(detail bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		limit, marker, err := pageParams(q)
		if err != nil {
			return err
		}
		id := identity(r.Context())
		f := store.ServerFilter{
			Scope:     store.Scope{ProjectID: id.ProjectID},
			NameRegex: q.Get("name"), ImageID: q.Get("image"), FlavorID: q.Get("flavor"),
			Marker: marker, Limit: limit,
		}
		if id.IsAdmin() || versionOf(r.Context()).AtLeast(Microversion{2, 5}) {
			f.IPRegex = q.Get("ip")
		}
		if versionOf(r.Context()).AtLeast(v226) {
			tagFilters(q, &f)
		}
		// all_tenants and the admin-only filters are honoured for admins
		// and silently ignored for everyone else, as Nova does.
		if id.IsAdmin() {
			if v, ok := q["all_tenants"]; ok && (len(v) == 0 || !isFalse(v[0])) {
				f.Scope.AllProjects = true
				f.ProjectID = firstOf(q.Get("project_id"), q.Get("tenant_id"))
			}
			f.Host = q.Get("host")
		}
		if s := q.Get("status"); s != "" {
			sf, ok := novastate.FilterFor(strings.ToUpper(s))
			if !ok {
				if versionOf(r.Context()).AtLeast(Microversion{2, 38}) {
					return apierr.Invalidf("Invalid status value")
				}
				// Before 2.38 Nova returns an empty list for an unknown status.
				return a.listServerPage(w, r, detail, nil, limit, q)
			}
			f.Status = &sf
		}
		if f.ChangesSince, f.ChangesBefore, err = changesWindow(r); err != nil {
			return err
		}
		return a.listServerPage(w, r, detail, &f, limit, q)
	}
}

func isFalse(s string) bool {
	switch strings.ToLower(s) {
	case "0", "false", "f", "no", "n", "off":
		return true
	}
	return false
}

func firstOf(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

func (a *API) deleteServer(w http.ResponseWriter, r *http.Request) error {
	c := caller(r)
	id := mux.Vars(r)["id"]
	if err := a.cfg.Store.DeleteServer(r.Context(), c, id, a.cfg.HostGrace); err != nil {
		return err
	}
	a.log.Info("server delete requested", "server_id", id, "request_id", c.RequestID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) serverIPs(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	addrs := a.serverView(r, srv).Addresses
	if name, ok := mux.Vars(r)["network"]; ok {
		list, ok := addrs[name]
		if !ok {
			return apierr.NotFoundf("Instance is not a member of specified network")
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{name: list})
		return nil
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"addresses": addrs})
	return nil
}

// interfaces is os-interface (list and show): the server's ports.
func (a *API) interfaces(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	view := func(p store.Port) map[string]any {
		return map[string]any{"port_state": "ACTIVE", "port_id": p.ID, "net_id": p.NetworkID, "mac_addr": p.MACAddress,
			"fixed_ips": []map[string]string{{"subnet_id": p.SubnetID, "ip_address": p.IPAddress}}}
	}
	if id, ok := mux.Vars(r)["port"]; ok {
		for _, p := range srv.Ports {
			if p.ID == id {
				httpx.WriteJSON(w, http.StatusOK, map[string]any{"interfaceAttachment": view(p)})
				return nil
			}
		}
		return apierr.NotFoundf("Instance %s is not attached to port %s.", srv.ID, id)
	}
	out := []map[string]any{}
	for _, p := range srv.Ports {
		out = append(out, view(p))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"interfaceAttachments": out})
	return nil
}

func itoa(n int) string { return fmt.Sprint(n) }
