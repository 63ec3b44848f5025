package api

import (
	"fmt"
	"net/http"

	"berth/internal/httpx"
)

// currentMinor is the newest Images API v2 minor version listed.
const currentMinor = 16

// versions answers GET / (300 Multiple Choices, as Glance does for version
// negotiation) and GET /versions (200) with Glance's version document.
func (s *Server) versions(status int) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		href := s.publicBase(r) + "/v2/"
		var list []map[string]any
		for minor := currentMinor; minor >= 0; minor-- {
			st := "SUPPORTED"
			if minor == currentMinor {
				st = "CURRENT"
			}
			list = append(list, map[string]any{
				"id":     fmt.Sprintf("v2.%d", minor),
				"status": st,
				"links":  []map[string]string{{"rel": "self", "href": href}},
			})
		}
		httpx.WriteJSON(w, status, map[string]any{"versions": list})
		return nil
	}
}
