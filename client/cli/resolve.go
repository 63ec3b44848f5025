package cli

import (
	"berth/client/sdk/fault"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	gservers "github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

func looksLikeID(s string) bool { return uuidRE.MatchString(s) }

// notFoundError is a name or id that matches nothing (exit 1).
type notFoundError struct{ kind, ref string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("No %s with a name or ID of '%s' exists.", e.kind, e.ref)
}

func ambiguous(kind, ref string, n int) error {
	return fmt.Errorf("More than one %s exists with the name '%s' (%d); use its ID.", kind, ref, n)
}

func is404(err error) bool { return gophercloud.ResponseCodeIs(err, http.StatusNotFound) }

// findServer resolves a server by id or exact name.
func findServer(ctx context.Context, c *gophercloud.ServiceClient, ref string) (*gservers.Server, error) {
	var idErr error // a by-id 404 carries the request id: report it if no name matches either
	if looksLikeID(ref) {
		s, err := gservers.Get(ctx, c, ref).Extract()
		if err == nil {
			return s, nil
		}
		if !is404(err) {
			return nil, err
		}
		idErr = err
	}
	pages, err := gservers.List(c, gservers.ListOpts{Name: "^" + regexp.QuoteMeta(ref) + "$"}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := gservers.ExtractServers(pages)
	if err != nil {
		return nil, err
	}
	return pickOne("server", ref, all, func(s gservers.Server) bool { return s.Name == ref || s.ID == ref }, idErr)
}

// serverID resolves a server reference to its id.
func serverID(ctx context.Context, c *gophercloud.ServiceClient, ref string) (string, error) {
	s, err := findServer(ctx, c, ref)
	if err != nil {
		return "", err
	}
	return s.ID, nil
}

// findImage resolves an image by id or exact name.
func findImage(ctx context.Context, c *gophercloud.ServiceClient, ref string) (*images.Image, error) {
	var idErr error // a by-id 404 carries the request id: report it if no name matches either
	if looksLikeID(ref) {
		img, err := images.Get(ctx, c, ref).Extract()
		if err == nil {
			return img, nil
		}
		if !is404(err) {
			return nil, err
		}
		idErr = err
	}
	pages, err := images.List(c, images.ListOpts{Name: ref}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := images.ExtractImages(pages)
	if err != nil {
		return nil, err
	}
	return pickOne("image", ref, all, func(img images.Image) bool { return img.Name == ref }, idErr)
}

// findFlavor resolves a flavor by id or exact name.
func findFlavor(ctx context.Context, c *gophercloud.ServiceClient, ref string) (*flavors.Flavor, error) {
	// Any string can be a flavor id, so a by-id 404 is the usual way to a
	// name and is not worth reporting.
	f, err := flavors.Get(ctx, c, ref).Extract()
	if err == nil {
		return f, nil
	}
	if !is404(err) {
		return nil, err
	}
	pages, err := flavors.ListDetail(c, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, err
	}
	return pickOne("flavor", ref, all, func(f flavors.Flavor) bool { return f.Name == ref }, nil)
}

// findNetwork resolves a network by id or exact name.
func findNetwork(ctx context.Context, c *gophercloud.ServiceClient, ref string) (*networks.Network, error) {
	var idErr error // a by-id 404 carries the request id: report it if no name matches either
	if looksLikeID(ref) {
		n, err := networks.Get(ctx, c, ref).Extract()
		if err == nil {
			return n, nil
		}
		if !is404(err) {
			return nil, err
		}
		idErr = err
	}
	pages, err := networks.List(c, networks.ListOpts{Name: ref}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := networks.ExtractNetworks(pages)
	if err != nil {
		return nil, err
	}
	return pickOne("network", ref, all, func(n networks.Network) bool { return n.Name == ref || n.ID == ref }, idErr)
}

// pickOne returns the one item of all that matches ref. None is a
// not-found error — the by-id lookup's own 404 when there was one, since it
// carries the request id — and several are ambiguous, as
// python-openstackclient says for names used twice.
func pickOne[T any](kind, ref string, all []T, matches func(T) bool, idErr error) (*T, error) {
	var match []T
	for _, x := range all {
		if matches(x) {
			match = append(match, x)
		}
	}
	switch len(match) {
	case 0:
		if idErr != nil {
			return nil, idErr
		}
		return nil, &notFoundError{kind, ref}
	case 1:
		return &match[0], nil
	}
	return nil, ambiguous(kind, ref, len(match))
}

// parseProps turns repeated KEY=VALUE flags into a map.
func parseProps(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// objectOf returns the decoded JSON object of a result, or its key member
// (e.g. "server" of {"server": {…}}). It reads the body itself because
// several gophercloud results strip that envelope in ExtractInto.
func objectOf(r gophercloud.Result, key string) (map[string]any, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	m, _ := r.Body.(map[string]any)
	if key == "" {
		if m == nil {
			return nil, fmt.Errorf("the answer is not a JSON object")
		}
		return m, nil
	}
	o, _ := m[key].(map[string]any)
	if o == nil {
		return nil, fmt.Errorf("the answer has no %q object", key)
	}
	return o, nil
}

// toInt reads a JSON number however it was decoded.
func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}

// unsupportedError says the cloud answered 404/501 for a whole Berth API
// (not for one item): it is older than this CLI, or the API is not built.
type unsupportedError struct {
	what string
	err  error
}

func (e *unsupportedError) Error() string {
	return "this cloud does not offer " + e.what + " (yet): " + message(e.err)
}

func (e *unsupportedError) Unwrap() error { return e.err }

// unsupported wraps err when it is a 404 or 501 from an API-level call.
func unsupported(err error, what string) error {
	switch fault.StatusOf(err) {
	case http.StatusNotFound, http.StatusNotImplemented, http.StatusMethodNotAllowed:
		// Converted now, so fault.From(wrapper) keeps the wrapper's words.
		return &unsupportedError{what: what, err: fault.From(err)}
	}
	return err
}
