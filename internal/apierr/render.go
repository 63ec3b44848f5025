package apierr

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// novaNames are the fault names Nova's wsgi.Fault uses per status.
var novaNames = map[int]string{
	400: "badRequest",
	401: "unauthorized",
	403: "forbidden",
	404: "itemNotFound",
	405: "badMethod",
	406: "notAcceptable",
	409: "conflictingRequest",
	413: "overLimit",
	415: "badMediaType",
	429: "overLimit",
	501: "notImplemented",
	503: "serviceUnavailable",
}

// NovaFaultName is the top-level key of Nova's fault body for status.
func NovaFaultName(status int) string {
	if n, ok := novaNames[status]; ok {
		return n
	}
	return "computeFault"
}

// RenderNova writes err as a Nova fault body:
// {"itemNotFound": {"code": 404, "message": "..."}}.
// Internal errors show a generic message; the caller logs the detail.
func RenderNova(w http.ResponseWriter, err error) {
	e := As(err)
	status := e.HTTPStatus()
	body := map[string]any{"code": status, "message": publicMessage(e)}
	if e.RetryAfter > 0 {
		body["retryAfter"] = strconv.Itoa(e.RetryAfter)
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, status, map[string]any{NovaFaultName(status): body})
}

// RenderGlance writes err as Glance (webob) does:
// {"message": "...", "code": "404 Not Found", "title": "Not Found"}.
func RenderGlance(w http.ResponseWriter, err error) {
	e := As(err)
	status := e.HTTPStatus()
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	text := http.StatusText(status)
	writeJSON(w, status, map[string]any{
		"message": publicMessage(e),
		"code":    strconv.Itoa(status) + " " + text,
		"title":   text,
	})
}

// RenderNeutron writes err as Neutron does:
// {"NeutronError": {"type": "HTTPNotFound", "message": "...", "detail": ""}}.
// neutronType, when non-empty, names the exception (e.g. "NetworkNotFound").
func RenderNeutron(w http.ResponseWriter, err error, neutronType string) {
	e := As(err)
	status := e.HTTPStatus()
	if neutronType == "" {
		neutronType = "HTTP" + http.StatusText(status)
	}
	writeJSON(w, status, map[string]any{"NeutronError": map[string]any{
		"type": neutronType, "message": publicMessage(e), "detail": "",
	}})
}

func publicMessage(e *Error) string {
	if e.Kind == Internal {
		return "Unexpected API Error. Please report this at your cloud operator and attach the request ID if possible."
	}
	return e.Message
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
