package registry

import (
	"net/http"
	"regexp"
	"strings"
)

// What a registry request is about.
type kind int

const (
	kindBase        kind = iota // /v2/
	kindCatalog                 // /v2/_catalog
	kindTags                    // /v2/<name>/tags/list
	kindManifest                // /v2/<name>/manifests/<reference>
	kindBlob                    // /v2/<name>/blobs/<digest>
	kindUploadStart             // /v2/<name>/blobs/uploads/
	kindUpload                  // /v2/<name>/blobs/uploads/<uuid>
	kindReferrers               // /v2/<name>/referrers/<digest>
)

// route is a parsed registry path.
type route struct {
	kind kind
	name string // repository name, e.g. "demo/alpine"
	ref  string // tag or digest, blob digest, or upload id
}

// parse recognizes registry paths. Repository requests all end in a
// registry keyword pair (manifests/<ref>, blobs/<digest>,
// blobs/uploads/[<id>], tags/list, referrers/<digest>), which no Glance
// path does, except Glance's PUT and DELETE of an image tag named "list"
// (/v2/images/{id}/tags/list), left to Glance: the registry only GETs
// tags/list. So a repository named "images" (or any other word) never
// takes a Glance route, and the Glance API never shadows a repository.
func parse(method, path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, path == "/v2"
	}
	switch rest {
	case "":
		return route{kind: kindBase}, true
	case "_catalog":
		return route{kind: kindCatalog}, true
	}
	c := strings.Split(rest, "/")
	n := len(c)
	join := func(k int) string { return strings.Join(c[:k], "/") }
	switch {
	case n >= 4 && c[n-3] == "blobs" && c[n-2] == "uploads" && c[n-1] == "":
		return route{kind: kindUploadStart, name: join(n - 3)}, true
	case n >= 4 && c[n-3] == "blobs" && c[n-2] == "uploads":
		return route{kind: kindUpload, name: join(n - 3), ref: c[n-1]}, true
	case n >= 3 && c[n-2] == "blobs" && c[n-1] == "uploads":
		return route{kind: kindUploadStart, name: join(n - 2)}, true
	case n >= 3 && c[n-2] == "blobs":
		return route{kind: kindBlob, name: join(n - 2), ref: c[n-1]}, true
	case n >= 3 && c[n-2] == "manifests":
		return route{kind: kindManifest, name: join(n - 2), ref: c[n-1]}, true
	case n >= 3 && c[n-2] == "tags" && c[n-1] == "list" && (method == http.MethodGet || method == http.MethodHead):
		return route{kind: kindTags, name: join(n - 2)}, true
	case n >= 3 && c[n-2] == "referrers":
		return route{kind: kindReferrers, name: join(n - 2), ref: c[n-1]}, true
	}
	return route{}, false
}

// IsRegistryPath reports whether a request belongs to the registry API.
func IsRegistryPath(method, path string) bool {
	_, ok := parse(method, path)
	return ok
}

// Route serves registry requests with registry and everything else with
// glance, on one listener (:9292).
func Route(registry, glance http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsRegistryPath(r.Method, r.URL.Path) {
			registry.ServeHTTP(w, r)
			return
		}
		glance.ServeHTTP(w, r)
	})
}

// Repository names: path components of lowercase letters and digits,
// separated by ".", "_", "__" or dashes (the OCI distribution grammar);
// Berth adds that there are at least two, the first naming the project
// (its name or id) the repository belongs to.
var componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)

// maxNameLength bounds a repository name (Glance image names are at most
// 255 characters: "<repo>:<tag>").
const maxNameLength = 200

// splitName returns the project and repository parts of a name, or why
// it is not valid.
func splitName(name string) (project, repo string, why string) {
	if len(name) > maxNameLength {
		return "", "", "repository name is too long"
	}
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if !componentRE.MatchString(p) {
			return "", "", "repository name components must be lowercase letters and digits separated by '.', '_', '__' or '-'"
		}
	}
	if len(parts) < 2 {
		return "", "", "repository names are <project>/<repository>: the first component is your project's name (or id)"
	}
	return parts[0], strings.Join(parts[1:], "/"), ""
}

// tagRE is the OCI tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
