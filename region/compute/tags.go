package compute

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// since answers 404 for a route older microversions do not have, as Nova
// does for an API method a version lacks.
func since(v Microversion, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if versionOf(r.Context()).Less(v) {
			return apierr.NotFoundf("The resource could not be found.")
		}
		return h(w, r)
	}
}

// until answers 404 from microversion v on (proxy APIs removed by 2.36).
func until(v Microversion, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if versionOf(r.Context()).AtLeast(v) {
			return apierr.NotFoundf("The resource could not be found.")
		}
		return h(w, r)
	}
}

// validTag applies Nova's tag rules (2.26): 1-60 characters, no '/' or ','.
func validTag(t string) error {
	n := utf8.RuneCountInString(t)
	switch {
	case n < 1 || n > 60:
		return apierr.Invalidf("Invalid input for field/attribute tags. Value: %s. Tags must be 1 to 60 characters long.", t)
	case strings.ContainsAny(t, "/,"):
		return apierr.Invalidf("Invalid input for field/attribute tags. Value: %s. Tags may not contain '/' or ','.", t)
	}
	return nil
}

func validTags(tags []string) error {
	if len(tags) > store.MaxServerTags {
		return apierr.Invalidf("The number of tags exceeded the per-server limit %d", store.MaxServerTags)
	}
	for _, t := range tags {
		if err := validTag(t); err != nil {
			return err
		}
	}
	return nil
}

// tagFilters reads the tags, tags-any, not-tags and not-tags-any list
// filters (comma-separated) into f.
func tagFilters(q map[string][]string, f *store.ServerFilter) {
	split := func(key string) []string {
		var out []string
		for _, v := range q[key] {
			for _, t := range strings.Split(v, ",") {
				if t != "" {
					out = append(out, t)
				}
			}
		}
		return out
	}
	f.Tags, f.TagsAny = split("tags"), split("tags-any")
	f.NotTags, f.NotTagsAny = split("not-tags"), split("not-tags-any")
}

func (a *API) listTags(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	tags := []string(srv.Tags)
	if tags == nil {
		tags = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tags": tags})
	return nil
}

// checkTag is GET /servers/{id}/tags/{tag}: 204 if present, else 404.
func (a *API) checkTag(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	tag := mux.Vars(r)["tag"]
	for _, t := range srv.Tags {
		if t == tag {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return apierr.NotFoundf("Tag %s could not be found.", tag)
}

// replaceTags is PUT /servers/{id}/tags {"tags": [...]}.
func (a *API) replaceTags(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Tags *[]string `json:"tags"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.Tags == nil {
		return apierr.Invalidf("Invalid input for field/attribute tags. 'tags' is a required property.")
	}
	if err := validTags(*body.Tags); err != nil {
		return err
	}
	tags, err := a.cfg.Store.ChangeTags(r.Context(), caller(r).Scope, mux.Vars(r)["id"], store.TagChange{Replace: true, Set: *body.Tags})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tags": tags})
	return nil
}

// addTag is PUT /servers/{id}/tags/{tag}: 201 with Location when new,
// 204 when the server already had it.
func (a *API) addTag(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	tag := vars["tag"]
	if err := validTag(tag); err != nil {
		return err
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, vars["id"])
	if err != nil {
		return err
	}
	had := false
	for _, t := range srv.Tags {
		had = had || t == tag
	}
	if _, err := a.cfg.Store.ChangeTags(r.Context(), caller(r).Scope, vars["id"], store.TagChange{Add: tag}); err != nil {
		return err
	}
	if had {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	w.Header().Set("Location", a.baseURL(r)+"/v2.1/servers/"+srv.ID+"/tags/"+tag)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// deleteTags is DELETE /servers/{id}/tags[/{tag}].
func (a *API) deleteTags(w http.ResponseWriter, r *http.Request) error {
	vars := mux.Vars(r)
	ch := store.TagChange{Replace: true}
	if tag, ok := vars["tag"]; ok {
		ch = store.TagChange{Remove: tag}
	}
	if _, err := a.cfg.Store.ChangeTags(r.Context(), caller(r).Scope, vars["id"], ch); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
