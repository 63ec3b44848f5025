package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// dockerSave streams `docker save REF` from the Docker Engine API (GET
// /images/get) — no docker CLI needed. host is DOCKER_HOST (unix:// or
// tcp://); empty means /var/run/docker.sock.
func dockerSave(ctx context.Context, host, ref string) (io.ReadCloser, error) {
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST %q: %w", host, err)
	}
	tr := &http.Transport{}
	base := ""
	switch u.Scheme {
	case "unix":
		sock := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		base = "http://docker"
	case "tcp", "http":
		base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("DOCKER_HOST %q: only unix:// and tcp:// are supported", host)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/images/get?"+url.Values{"names": {ref}}.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(b))
		if i := strings.Index(msg, `"message":"`); i >= 0 {
			msg = strings.TrimSuffix(strings.TrimSuffix(msg[i+len(`"message":"`):], "}"), `"`)
		}
		return nil, fmt.Errorf("docker save %s: %s (HTTP %d)", ref, msg, resp.StatusCode)
	}
	return resp.Body, nil
}
