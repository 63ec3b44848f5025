package compute

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
	"berth/schema"
)

// maxLimit caps list pages, as Nova's [api] max_limit (default 1000).
const maxLimit = 1000

// pageParams reads limit and marker.
func pageParams(q url.Values) (limit int, marker string, err error) {
	limit = maxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, "", apierr.Invalidf("limit param must be an integer")
		}
		if n < limit {
			limit = n
		}
	}
	return limit, q.Get("marker"), nil
}

// nextLink builds the "next" link of a full page.
func nextLink(base, path string, q url.Values, marker string) []schema.Link {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	q2.Set("marker", marker)
	return []schema.Link{{Href: base + path + "?" + q2.Encode(), Rel: "next"}}
}

func (a *API) flavorLinks(r *http.Request, id string) []schema.Link {
	base := a.baseURL(r)
	return []schema.Link{
		{Href: base + "/v2.1/flavors/" + id, Rel: "self"},
		{Href: base + "/flavors/" + id, Rel: "bookmark"},
	}
}

func (a *API) flavorView(r *http.Request, f *store.Flavor) schema.Flavor {
	var swap any = ""
	if f.SwapMB > 0 {
		swap = f.SwapMB
	}
	return schema.Flavor{
		ID: f.ID, Name: f.Name, RAM: f.RAMMB, VCPUs: f.VCPUs, Disk: f.DiskGB,
		Ephemeral: f.EphemeralGB, Swap: swap, RxTxFactor: f.RxTxFactor, IsPublic: f.IsPublic,
		Disabled: f.Disabled, Links: a.flavorLinks(r, f.ID), Description: flavorDescription(r, f),
		ExtraSpecs: flavorSpecs(r, f),
	}
}

// flavorSpecs are in the flavor body from 2.61 (Nova's default policy
// lets everyone read extra specs).
func flavorSpecs(r *http.Request, f *store.Flavor) *map[string]string {
	if versionOf(r.Context()).Less(Microversion{2, 61}) {
		return nil
	}
	m := f.Specs()
	return &m
}

// flavorDescription is shown (null when unset) from 2.55.
func flavorDescription(r *http.Request, f *store.Flavor) **string {
	if versionOf(r.Context()).Less(Microversion{2, 55}) {
		return nil
	}
	d := f.Description
	return &d
}

// updateFlavor is PUT /flavors/{id} (2.55, admin): only the description
// may change.
func (a *API) updateFlavor(w http.ResponseWriter, r *http.Request) error {
	if versionOf(r.Context()).Less(Microversion{2, 55}) {
		return &apierr.Error{Kind: apierr.Invalid, Status: http.StatusMethodNotAllowed,
			Message: "The method PUT is not allowed for this resource."}
	}
	var body struct {
		Flavor *struct {
			Description *string `json:"description"`
		} `json:"flavor"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.Flavor == nil {
		return apierr.Invalidf("Invalid input for field/attribute flavor. 'flavor' is a required property.")
	}
	if d := body.Flavor.Description; d != nil && utf8.RuneCountInString(*d) > 65535 {
		return apierr.Invalidf("Invalid input for field/attribute description. It is too long.")
	}
	f, err := a.cfg.Store.SetFlavorDescription(r.Context(), mux.Vars(r)["id"], body.Flavor.Description)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"flavor": a.flavorView(r, f)})
	return nil
}

func (a *API) listFlavors(detail bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		limit, marker, err := pageParams(q)
		if err != nil {
			return err
		}
		f := store.FlavorFilter{Limit: limit, Marker: marker, SortKey: q.Get("sort_key"), SortDir: q.Get("sort_dir")}
		for k, dst := range map[string]*int{"minRam": &f.MinRAM, "minDisk": &f.MinDisk} {
			if s := q.Get(k); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil || n < 0 {
					return apierr.Invalidf("Invalid %s filter [%s]", k, s)
				}
				*dst = n
			}
		}
		// is_public: non-admins see public flavors only; admins may ask for
		// private ones or (None) all of them.
		f.ProjectID = identity(r.Context()).ProjectID
		if identity(r.Context()).IsAdmin() {
			switch strings.ToLower(q.Get("is_public")) {
			case "none":
				f.All = true
			case "false", "0", "f", "no", "off":
				pub := false
				f.IsPublic = &pub
			}
		}
		flavors, err := a.cfg.Store.ListFlavors(r.Context(), f)
		if err != nil {
			return err
		}
		body := map[string]any{}
		if detail {
			out := make([]schema.Flavor, len(flavors))
			for i := range flavors {
				out[i] = a.flavorView(r, &flavors[i])
			}
			body["flavors"] = out
		} else {
			out := make([]schema.FlavorBrief, len(flavors))
			for i, fl := range flavors {
				out[i] = schema.FlavorBrief{ID: fl.ID, Name: fl.Name, Links: a.flavorLinks(r, fl.ID),
					Description: flavorDescription(r, &flavors[i])}
			}
			body["flavors"] = out
		}
		if limit > 0 && len(flavors) == limit {
			body["flavors_links"] = nextLink(a.baseURL(r), r.URL.Path, q, flavors[len(flavors)-1].ID)
		}
		httpx.WriteJSON(w, http.StatusOK, body)
		return nil
	}
}

func (a *API) showFlavor(w http.ResponseWriter, r *http.Request) error {
	f, err := a.findFlavor(r, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"flavor": a.flavorView(r, f)})
	return nil
}

// findFlavor returns a flavor the caller may use: private flavors are 404
// for projects without access, as in Nova.
func (a *API) findFlavor(r *http.Request, id string) (*store.Flavor, error) {
	f, err := a.cfg.Store.FindFlavor(r.Context(), id)
	if err != nil {
		return nil, err
	}
	who := identity(r.Context())
	if who.IsAdmin() {
		return f, nil
	}
	ok, err := a.cfg.Store.FlavorVisible(r.Context(), f, who.ProjectID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierr.NotFoundf("Flavor %s could not be found.", id)
	}
	return f, nil
}

func (a *API) createFlavor(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Flavor *struct {
			Name        string   `json:"name"`
			ID          *string  `json:"id"`
			RAM         int      `json:"ram"`
			VCPUs       int      `json:"vcpus"`
			Disk        int      `json:"disk"`
			Ephemeral   int      `json:"OS-FLV-EXT-DATA:ephemeral"`
			Swap        int      `json:"swap"`
			RxTxFactor  *float64 `json:"rxtx_factor"`
			IsPublic    *bool    `json:"os-flavor-access:is_public"`
			Description *string  `json:"description"`
		} `json:"flavor"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	fb := body.Flavor
	if fb == nil {
		return apierr.Invalidf("Invalid input for field/attribute flavor. 'flavor' is a required property.")
	}
	if err := validName("name", fb.Name); err != nil {
		return err
	}
	if fb.Description != nil && versionOf(r.Context()).Less(Microversion{2, 55}) {
		return apierr.Invalidf("Additional properties are not allowed ('description' was unexpected)")
	}
	switch {
	case fb.RAM < 1 || fb.VCPUs < 1 || fb.Disk < 0 || fb.Ephemeral < 0 || fb.Swap < 0:
		return apierr.Invalidf("Invalid input for field/attribute flavor: ram and vcpus must be at least 1, disk, ephemeral and swap at least 0.")
	case fb.RxTxFactor != nil && *fb.RxTxFactor <= 0:
		return apierr.Invalidf("Invalid input for field/attribute rxtx_factor. It must be positive.")
	}
	f := store.Flavor{Name: fb.Name, VCPUs: fb.VCPUs, RAMMB: fb.RAM, DiskGB: fb.Disk, EphemeralGB: fb.Ephemeral,
		SwapMB: fb.Swap, RxTxFactor: 1, IsPublic: true, Description: fb.Description}
	if fb.RxTxFactor != nil {
		f.RxTxFactor = *fb.RxTxFactor
	}
	if fb.IsPublic != nil {
		f.IsPublic = *fb.IsPublic
	}
	f.ID = uuid.NewString()
	if fb.ID != nil && *fb.ID != "" {
		if !flavorID.MatchString(*fb.ID) {
			return apierr.Invalidf("Invalid input for field/attribute id. Value: %s. It must be 1-255 of [a-zA-Z0-9_.- ].", *fb.ID)
		}
		f.ID = *fb.ID
	}
	out, err := a.cfg.Store.CreateFlavor(r.Context(), f)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"flavor": a.flavorView(r, out)})
	return nil
}

var flavorID = regexp.MustCompile(`^[a-zA-Z0-9_. -]{1,255}$`)

func (a *API) deleteFlavor(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.DeleteFlavor(r.Context(), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (a *API) getExtraSpecs(w http.ResponseWriter, r *http.Request) error {
	f, err := a.findFlavor(r, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	specs := f.Specs()
	if key, ok := mux.Vars(r)["key"]; ok {
		v, ok := specs[key]
		if !ok {
			return apierr.NotFoundf("Flavor %s has no extra specs with key %s.", f.ID, key)
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{key: v})
		return nil
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"extra_specs": specs})
	return nil
}

func validSpecs(m map[string]string) error {
	for k, v := range m {
		if k == "" || len(k) > 255 || len(v) > 255 {
			return apierr.Invalidf("Invalid input for field/attribute extra_specs. Keys must be 1-255 and values 0-255 characters long.")
		}
	}
	return nil
}

func (a *API) setExtraSpecs(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		ExtraSpecs map[string]string `json:"extra_specs"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.ExtraSpecs == nil {
		return apierr.Invalidf("Invalid input for field/attribute extra_specs. 'extra_specs' is a required property.")
	}
	if err := validSpecs(body.ExtraSpecs); err != nil {
		return err
	}
	if _, err := a.cfg.Store.UpdateExtraSpecs(r.Context(), mux.Vars(r)["id"], body.ExtraSpecs, ""); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"extra_specs": body.ExtraSpecs})
	return nil
}

func (a *API) setExtraSpec(w http.ResponseWriter, r *http.Request) error {
	var body map[string]string
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	key := mux.Vars(r)["key"]
	if _, ok := body[key]; !ok || len(body) != 1 {
		return apierr.Invalidf("Request body and URI mismatch")
	}
	if err := validSpecs(body); err != nil {
		return err
	}
	if _, err := a.cfg.Store.UpdateExtraSpecs(r.Context(), mux.Vars(r)["id"], body, ""); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

func (a *API) deleteExtraSpec(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	if _, err := a.cfg.Store.UpdateExtraSpecs(r.Context(), vars["id"], nil, vars["key"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (a *API) flavorAccessList(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	f, err := a.cfg.Store.FindFlavor(r.Context(), id)
	if err != nil {
		return err
	}
	if f.IsPublic {
		return apierr.NotFoundf("Access list not available for public flavors.")
	}
	projects, err := a.cfg.Store.FlavorAccess(r.Context(), id)
	if err != nil {
		return err
	}
	out := []map[string]string{}
	for _, p := range projects {
		out = append(out, map[string]string{"flavor_id": id, "tenant_id": p})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"flavor_access": out})
	return nil
}

// flavorAction is POST /flavors/{id}/action: addTenantAccess and
// removeTenantAccess.
func (a *API) flavorAction(w http.ResponseWriter, r *http.Request) error {
	var body map[string]struct {
		Tenant string `json:"tenant"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if len(body) != 1 {
		return apierr.Invalidf("Malformed request body: exactly one action is required.")
	}
	for name, arg := range body {
		if arg.Tenant == "" {
			return apierr.Invalidf("Invalid input for field/attribute tenant. 'tenant' is a required property.")
		}
		switch name {
		case "addTenantAccess", "removeTenantAccess":
			if err := a.cfg.Store.SetFlavorAccess(r.Context(), mux.Vars(r)["id"], arg.Tenant, name == "addTenantAccess"); err != nil {
				return err
			}
		default:
			return apierr.Invalidf("There is no such action: %s", name)
		}
	}
	return a.flavorAccessList(w, r)
}
