package compute

import (
	"encoding/json"
	"net/http"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
	"berth/schema"
)

func (a *API) updateServer(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Server *schema.ServerUpdate `json:"server"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	u := body.Server
	if u == nil {
		return apierr.Invalidf("Invalid input for field/attribute server. 'server' is a required property.")
	}
	v := versionOf(r.Context())
	if u.Description != nil && v.Less(Microversion{2, 19}) {
		return apierr.Invalidf("Additional properties are not allowed ('description' was unexpected)")
	}
	if u.HostName != nil && v.Less(Microversion{2, 90}) {
		return apierr.Invalidf("Additional properties are not allowed ('hostname' was unexpected)")
	}
	if u.Name != nil {
		if err := validName("name", *u.Name); err != nil {
			return err
		}
	}
	if u.Description != nil && utf8.RuneCountInString(*u.Description) > 255 {
		return apierr.Invalidf("Invalid input for field/attribute description. It must be at most 255 characters long.")
	}
	srv, err := a.cfg.Store.UpdateServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"], store.ServerChanges{
		Name: u.Name, Description: u.Description, AccessIPv4: u.AccessIPv4, AccessIPv6: u.AccessIPv6,
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"server": a.serverView(r, srv)})
	return nil
}

func validMetadata(m map[string]string) error {
	for k, v := range m {
		if k == "" || utf8.RuneCountInString(k) > 255 || utf8.RuneCountInString(v) > 255 {
			return apierr.Invalidf("Invalid input for field/attribute metadata. Keys must be 1-255 and values 0-255 characters long.")
		}
	}
	return nil
}

func (a *API) metadataLimit(r *http.Request) (int, error) {
	q, err := a.cfg.Store.Quotas(r.Context(), identity(r.Context()).ProjectID)
	if err != nil {
		return 0, err
	}
	return q["metadata_items"], nil
}

func (a *API) getMetadata(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	meta := map[string]string{}
	_ = json.Unmarshal(srv.Metadata, &meta)
	if key, ok := mux.Vars(r)["key"]; ok {
		v, ok := meta[key]
		if !ok {
			return apierr.NotFoundf("Metadata item was not found")
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"meta": map[string]string{key: v}})
		return nil
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"metadata": meta})
	return nil
}

// setMetadata is PUT (replace) or POST (merge) /servers/{id}/metadata.
func (a *API) setMetadata(replace bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			Metadata map[string]string `json:"metadata"`
		}
		if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
			return err
		}
		if body.Metadata == nil {
			return apierr.Invalidf("Invalid input for field/attribute metadata. 'metadata' is a required property.")
		}
		if err := validMetadata(body.Metadata); err != nil {
			return err
		}
		limit, err := a.metadataLimit(r)
		if err != nil {
			return err
		}
		meta, err := a.cfg.Store.SetMetadata(r.Context(), caller(r).Scope, mux.Vars(r)["id"], body.Metadata, replace, nil, limit)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"metadata": meta})
		return nil
	}
}

func (a *API) setMetadataItem(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Meta map[string]string `json:"meta"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	key := mux.Vars(r)["key"]
	if _, ok := body.Meta[key]; !ok || len(body.Meta) != 1 {
		return apierr.Invalidf("Request body and URI mismatch")
	}
	if err := validMetadata(body.Meta); err != nil {
		return err
	}
	limit, err := a.metadataLimit(r)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Store.SetMetadata(r.Context(), caller(r).Scope, mux.Vars(r)["id"], body.Meta, false, nil, limit); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"meta": body.Meta})
	return nil
}

func (a *API) deleteMetadataItem(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	if _, err := a.cfg.Store.SetMetadata(r.Context(), caller(r).Scope, vars["id"], nil, false, []string{vars["key"]}, -1); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
