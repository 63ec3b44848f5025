package api

import (
	"net/http"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
)

// maxMembers is Glance's [DEFAULT] image_member_quota.
const maxMembers = 128

// Glance image members: the owner of a shared image adds projects as
// members (pending); a member accepts or rejects; a shared image is
// visible to its members (listed by default once accepted).

func memberView(m *store.Member) map[string]any {
	return map[string]any{
		"image_id":   m.ImageID,
		"member_id":  m.MemberID,
		"status":     m.Status,
		"created_at": m.CreatedAt.UTC().Format(timeFormat),
		"updated_at": m.UpdatedAt.UTC().Format(timeFormat),
		"schema":     "/v2/schemas/member",
	}
}

// memberImage returns the image for a members call, NotFound if the
// caller cannot see it.
func (s *Server) memberImage(r *http.Request) (*keystone.Identity, *store.Image, error) {
	id, err := identity(r)
	if err != nil {
		return nil, nil, err
	}
	img, err := s.visibleImage(r.Context(), id, mux.Vars(r)["image_id"])
	if err != nil {
		return nil, nil, err
	}
	return id, img, nil
}

// isOwner reports whether the caller owns img (or is admin).
func isOwner(id *keystone.Identity, img *store.Image) bool {
	return id.IsAdmin() || (id.ProjectID != "" && img.OwnerID() == id.ProjectID)
}

// addMember is POST /v2/images/{id}/members {"member": "<project>"}: 200.
func (s *Server) addMember(w http.ResponseWriter, r *http.Request) error {
	id, img, err := s.memberImage(r)
	if err != nil {
		return err
	}
	// Other keys are ignored, as Glance does.
	var body struct {
		Member *string `json:"member"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if body.Member == nil || *body.Member == "" {
		return apierr.Invalidf("Provided object does not match schema 'member': 'member' is a required property")
	}
	if len(*body.Member) > maxStringLen {
		return apierr.Invalidf("Provided object does not match schema 'member': member is too long")
	}
	if !isOwner(id, img) {
		return apierr.Forbiddenf("You are not authorized to complete add_member action.")
	}
	if !id.CanWrite() {
		return apierr.Forbiddenf("You are not authorized to complete add_member action.")
	}
	if img.Visibility != store.VisibilityShared {
		return apierr.Forbiddenf("Only shared images have members.")
	}
	m, err := s.cfg.Store.AddMember(r.Context(), img.ID, *body.Member, maxMembers)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, memberView(m))
	return nil
}

// listMembers is GET /v2/images/{id}/members: every member for the owner,
// only their own entry for a member.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) error {
	id, img, err := s.memberImage(r)
	if err != nil {
		return err
	}
	if img.Visibility != store.VisibilityShared {
		return apierr.Forbiddenf("Only shared images have members.")
	}
	ms, err := s.cfg.Store.FindMembers(r.Context(), img.ID)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, m := range ms {
		if isOwner(id, img) || m.MemberID == id.ProjectID {
			out = append(out, memberView(m))
		}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"members": out, "schema": "/v2/schemas/members"})
	return nil
}

// showMember is GET /v2/images/{id}/members/{member}: the owner sees any
// member, a member only itself (others are 404).
func (s *Server) showMember(w http.ResponseWriter, r *http.Request) error {
	id, img, err := s.memberImage(r)
	if err != nil {
		return err
	}
	member := mux.Vars(r)["member_id"]
	if !isOwner(id, img) && member != id.ProjectID {
		return apierr.NotFoundf("%s is not a member of image %s", member, img.ID)
	}
	m, err := s.cfg.Store.FindMember(r.Context(), img.ID, member)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, memberView(m))
	return nil
}

// updateMember is PUT /v2/images/{id}/members/{member} {"status": ...}:
// only the member itself decides (accepted, rejected or pending).
func (s *Server) updateMember(w http.ResponseWriter, r *http.Request) error {
	id, img, err := s.memberImage(r)
	if err != nil {
		return err
	}
	// Other keys are ignored, as Glance does (openstacksdk sends "member").
	var body struct {
		Status *string `json:"status"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if body.Status == nil {
		return apierr.Invalidf("Provided object does not match schema 'member': 'status' is a required property")
	}
	switch *body.Status {
	case store.MemberPending, store.MemberAccepted, store.MemberRejected:
	default:
		return apierr.Invalidf("Provided object does not match schema 'member': '%s' is not one of ['pending', 'accepted', 'rejected'] (status)", *body.Status)
	}
	member := mux.Vars(r)["member_id"]
	if _, err := s.cfg.Store.FindMember(r.Context(), img.ID, member); err != nil {
		return err
	}
	if member != id.ProjectID {
		return apierr.Forbiddenf("You are not permitted to modify 'status' on this image member.")
	}
	m, err := s.cfg.Store.UpdateMember(r.Context(), img.ID, member, *body.Status)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, memberView(m))
	return nil
}

// deleteMember is DELETE /v2/images/{id}/members/{member}: 204, owner only.
func (s *Server) deleteMember(w http.ResponseWriter, r *http.Request) error {
	id, img, err := s.memberImage(r)
	if err != nil {
		return err
	}
	member := mux.Vars(r)["member_id"]
	if !isOwner(id, img) || !id.CanWrite() {
		if member != id.ProjectID {
			return apierr.NotFoundf("%s is not a member of image %s", member, img.ID)
		}
		return apierr.Forbiddenf("You are not authorized to complete delete_member action.")
	}
	if err := s.cfg.Store.DeleteMember(r.Context(), img.ID, member); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func memberSchemaDoc() map[string]any {
	return map[string]any{
		"name": "member",
		"properties": map[string]any{
			"created_at": map[string]any{"type": "string", "description": "Date and time of image member creation"},
			"image_id":   map[string]any{"type": "string", "description": "An identifier for the image", "pattern": uuidPattern},
			"member_id":  map[string]any{"type": "string", "description": "An identifier for the image member (tenantId)"},
			"status": map[string]any{"type": "string", "description": "The status of this image member",
				"enum": []string{"pending", "accepted", "rejected"}},
			"updated_at": map[string]any{"type": "string", "description": "Date and time of last modification of image member"},
			"schema":     map[string]any{"type": "string", "readOnly": true},
		},
	}
}

func (s *Server) memberSchema(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, memberSchemaDoc())
	return nil
}

func (s *Server) membersSchema(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"name": "members",
		"properties": map[string]any{
			"members": map[string]any{"type": "array", "items": memberSchemaDoc()},
			"schema":  map[string]any{"type": "string"},
		},
		"links": []map[string]string{{"rel": "describedby", "href": "{schema}"}},
	})
	return nil
}
