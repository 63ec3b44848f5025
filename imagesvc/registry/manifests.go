package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"berth/imagesvc/content"
	"berth/imagesvc/digest"
	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

func manifestUnknown(name, ref string) error {
	return &regError{status: http.StatusNotFound, code: "MANIFEST_UNKNOWN", message: "manifest unknown",
		detail: map[string]string{"name": name, "reference": ref}}
}

func nameUnknown(name string) error {
	return &regError{status: http.StatusNotFound, code: "NAME_UNKNOWN", message: "repository name not known to registry",
		detail: map[string]string{"name": name}}
}

// resolve finds the image a manifest reference names: a manifest digest,
// an image id, or a tag.
func (g *Registry) resolve(ctx context.Context, req *request) (*store.Image, error) {
	v := req.caller.viewer()
	ref := req.ref
	switch {
	case strings.HasPrefix(ref, "sha256:"):
		if !digest.Valid(ref) {
			return nil, &regError{status: http.StatusBadRequest, code: "DIGEST_INVALID", message: "invalid digest"}
		}
		owner := req.owner
		if req.caller.Agent {
			// Docker re-reads a manifest by the digest a pull by image id
			// named; the agent's repository belongs to no project.
			owner = ""
		}
		img, err := g.cfg.Store.FindImageByManifest(ctx, v, owner, ref)
		if apierr.Is(err, apierr.NotFound) {
			return nil, manifestUnknown(req.name, ref)
		}
		return img, err
	case !tagRE.MatchString(ref):
		return nil, &regError{status: http.StatusBadRequest, code: "TAG_INVALID", message: "invalid tag",
			detail: map[string]string{"tag": ref}}
	}
	if _, err := uuid.Parse(ref); err == nil && len(ref) == 36 {
		// Host agents pull any image by id: <any project>/<any repo>:<image id>.
		img, err := g.cfg.Store.FindImageByID(ctx, strings.ToLower(ref))
		if err == nil && (img.OwnerID() == req.owner || req.caller.Agent) && img.ManifestDigest != nil {
			if ok, err := g.cfg.Store.CanSee(ctx, v, img); err != nil {
				return nil, err
			} else if ok {
				return img, nil
			}
		}
	}
	tags, err := g.cfg.Store.FindRepositoryImages(ctx, v, req.owner, req.repo)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		if t.Tag == ref {
			return t.Image, nil
		}
	}
	if len(tags) == 0 {
		return nil, nameUnknown(req.name)
	}
	return nil, manifestUnknown(req.name, ref)
}

// getManifest is GET and HEAD /v2/<name>/manifests/<reference>.
func (g *Registry) getManifest(w http.ResponseWriter, r *http.Request, req *request) error {
	img, err := g.resolve(r.Context(), req)
	if err != nil {
		return err
	}
	if img.Status != store.StatusActive && img.Status != store.StatusDeactivated {
		return manifestUnknown(req.name, req.ref)
	}
	if img.Status == store.StatusDeactivated && !req.caller.viewer().Admin {
		return newErr(http.StatusForbidden, "DENIED", "the image has been deactivated; pulling it is forbidden")
	}
	body, err := g.cfg.Content.ReadAll(r.Context(), *img.ManifestDigest, content.MaxManifestSize)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", *img.ManifestMediaType)
	h.Set("Docker-Content-Digest", *img.ManifestDigest)
	h.Set("Etag", `"`+*img.ManifestDigest+`"`)
	setLength(w, int64(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return nil
}

func manifestInvalid(format string, args ...any) error {
	return &regError{status: http.StatusBadRequest, code: "MANIFEST_INVALID", message: fmt.Sprintf(format, args...)}
}

// maxConfigSize bounds an image config read while checking a manifest.
const maxConfigSize = 8 << 20

// putManifest is PUT /v2/<name>/manifests/<reference>: the manifest's
// blobs must all be there (uploaded by the caller's project, or part of
// images it can see) and match the config's diff_ids; the image becomes
// a Glance image of the project, 201.
func (g *Registry) putManifest(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	ref := req.ref
	isDigest := strings.HasPrefix(ref, "sha256:")
	if isDigest && !digest.Valid(ref) || !isDigest && !tagRE.MatchString(ref) {
		return &regError{status: http.StatusBadRequest, code: "TAG_INVALID", message: "invalid tag or digest",
			detail: map[string]string{"reference": ref}}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, content.MaxManifestSize))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &regError{status: http.StatusRequestEntityTooLarge, code: "SIZE_INVALID",
			message: fmt.Sprintf("manifest is larger than %d bytes", content.MaxManifestSize)}
	}
	if err != nil {
		return newErr(http.StatusBadRequest, "MANIFEST_INVALID", "reading the manifest failed")
	}
	m, mediaType, err := content.ParseManifest(body, r.Header.Get("Content-Type"))
	var me *content.ManifestError
	if errors.As(err, &me) {
		if me.Unsupported {
			return &regError{status: http.StatusBadRequest, code: "MANIFEST_INVALID", message: me.Reason,
				detail: map[string]string{"mediaType": mediaType}}
		}
		return manifestInvalid("%s", me.Reason)
	}
	if err != nil {
		return err
	}
	md := digest.Of(body)
	if isDigest && md != ref {
		return &regError{status: http.StatusBadRequest, code: "DIGEST_INVALID",
			message: "manifest digest does not match the reference", detail: map[string]string{"digest": md}}
	}
	ctx := r.Context()

	// Every blob: known, usable by the caller, of the size the manifest says.
	all := append([]content.Descriptor{m.Config}, m.Layers...)
	var ds []string
	for _, d := range all {
		ds = append(ds, d.Digest)
	}
	blobs, err := g.cfg.Store.FindBlobs(ctx, ds)
	if err != nil {
		return err
	}
	var total int64
	for _, d := range all {
		b, ok := blobs[d.Digest]
		if ok {
			ok, err = g.blobAccessible(ctx, req, d.Digest)
			if err != nil {
				return err
			}
		}
		if !ok {
			return &regError{status: http.StatusBadRequest, code: "MANIFEST_BLOB_UNKNOWN",
				message: "manifest references a blob unknown to registry", detail: map[string]string{"digest": d.Digest}}
		}
		if b.Size != d.Size {
			return manifestInvalid("blob %s is %d bytes, the manifest says %d", d.Digest, b.Size, d.Size)
		}
		total += b.Size
	}
	if total > g.cfg.MaxImageSize {
		return &regError{status: http.StatusRequestEntityTooLarge, code: "DENIED",
			message: fmt.Sprintf("image exceeds the size limit of %d bytes", g.cfg.MaxImageSize)}
	}
	config, err := g.cfg.Content.ReadAll(ctx, m.Config.Digest, maxConfigSize)
	if err != nil {
		return manifestInvalid("image config %s cannot be read: %v", m.Config.Digest, err)
	}
	diffIDs, err := dockerarchive.ConfigDiffIDs(config)
	if err != nil {
		return manifestInvalid("image config: %v", err)
	}
	if len(diffIDs) != len(m.Layers) {
		return manifestInvalid("manifest has %d layers but the config has %d diff_ids", len(m.Layers), len(diffIDs))
	}
	data := &store.DockerData{ConfigDigest: m.Config.Digest, ManifestMediaType: mediaType}
	parent := ""
	var files []*dockerarchive.File
	for i, l := range m.Layers {
		b := blobs[l.Digest]
		if b.DiffID == nil || *b.DiffID != diffIDs[i] {
			got := "unknown"
			if b.DiffID != nil {
				got = *b.DiffID
			}
			return manifestInvalid("layer %d (%s) uncompresses to %s but the config says %s", i, l.Digest, got, diffIDs[i])
		}
		chain := dockerarchive.ChainID(parent, diffIDs[i])
		parent = chain
		mt := l.MediaType
		if mt == "" {
			mt = content.MediaTypeOCILayerGzip
		}
		data.Layers = append(data.Layers, store.ImageLayer{ChainID: chain, DiffID: diffIDs[i], Size: b.Size,
			BlobDigest: l.Digest, MediaType: mt})
		files = append(files, &dockerarchive.File{Digest: l.Digest, Size: b.Size})
	}

	mdesc, err := g.cfg.Content.PutBytes(ctx, body, "")
	if err != nil {
		return err
	}
	data.ManifestDigest = mdesc.Digest
	var tag *store.Tag
	if !isDigest {
		tag = &store.Tag{ProjectID: req.owner, Repository: req.repo, Tag: ref}
	}
	// Pushing what the project already has (same manifest) moves the tag.
	if existing, err := g.cfg.Store.FindImageByManifest(ctx, req.caller.viewer(), req.owner, md); err == nil &&
		existing.Status == store.StatusActive && existing.Properties[propRepository] == req.repo {
		if tag != nil {
			tag.ImageID = existing.ID
			if err := g.cfg.Store.PutTag(ctx, *tag); err != nil {
				return err
			}
		}
		return manifestCreated(w, req, md)
	}
	built, err := g.cfg.Content.BuildArchive(ctx, dockerarchive.Image{
		Config: &dockerarchive.File{Digest: m.Config.Digest, Size: m.Config.Size}, Layers: files,
		Manifest: &dockerarchive.File{Digest: md, Size: int64(len(body))}, ManifestMediaType: mediaType,
	})
	if err != nil {
		return err
	}
	data.RecipeDigest = built.RecipeDigest
	name := req.repo + ":" + ref
	if isDigest {
		name = req.repo + "@" + ref
	}
	if len(name) > 255 {
		name = name[:255]
	}
	owner, cf, df := req.owner, "docker", "raw"
	algo := "sha512"
	img := &store.Image{
		ID: uuid.NewString(), Name: &name, Owner: &owner, Status: store.StatusActive,
		Visibility: store.VisibilityShared, ContainerFormat: &cf, DiskFormat: &df,
		Size: &built.Size, Checksum: &built.MD5, OSHashAlgo: &algo, OSHashValue: &built.SHA512,
		Tags: store.Tags{}, Properties: store.Properties{propDockerImageID: m.Config.Digest, propRepository: req.repo},
	}
	if err := g.cfg.Store.CreateDockerImage(ctx, img, data, tag); err != nil {
		if apierr.Is(err, apierr.Conflict) {
			return &regError{status: http.StatusBadRequest, code: "MANIFEST_BLOB_UNKNOWN",
				message: "a blob of the manifest was removed meanwhile; push again", err: err}
		}
		return err
	}
	g.log.Info("image pushed", "image_id", img.ID, "repository", req.name, "reference", ref, "manifest", md,
		"size", built.Size, "request_id", httpx.RequestID(ctx))
	return manifestCreated(w, req, md)
}

// Properties the registry sets on pushed images (read-only in Glance).
const (
	propDockerImageID = "docker_image_id"
	propRepository    = "docker_repository"
)

func manifestCreated(w http.ResponseWriter, req *request, md string) error {
	w.Header().Set("Location", "/v2/"+req.name+"/manifests/"+md)
	w.Header().Set("Docker-Content-Digest", md)
	setLength(w, 0)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// deleteManifest is DELETE /v2/<name>/manifests/<tag>: the tag goes (the
// Glance image stays; delete it through Glance), 202. Deleting by digest
// is not supported.
func (g *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	if strings.HasPrefix(req.ref, "sha256:") {
		return newErr(http.StatusMethodNotAllowed, "UNSUPPORTED",
			"delete the Glance image to delete a manifest; DELETE by tag removes the tag")
	}
	if err := g.cfg.Store.DeleteTag(r.Context(), req.owner, req.repo, req.ref); err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return manifestUnknown(req.name, req.ref)
		}
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// tags is GET /v2/<name>/tags/list[?n=&last=].
func (g *Registry) tags(w http.ResponseWriter, r *http.Request, req *request) error {
	rts, err := g.cfg.Store.FindRepositoryImages(r.Context(), req.caller.viewer(), req.owner, req.repo)
	if err != nil {
		return err
	}
	if len(rts) == 0 {
		return nameUnknown(req.name)
	}
	var tags []string
	for _, t := range rts {
		if tagRE.MatchString(t.Tag) {
			tags = append(tags, t.Tag)
		}
	}
	sort.Strings(tags)
	page, next, err := paginate(r, tags)
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("Link", `</v2/`+req.name+`/tags/list?n=`+r.URL.Query().Get("n")+`&last=`+url.QueryEscape(next)+`>; rel="next"`)
	}
	return writeJSON(w, map[string]any{"name": req.name, "tags": page})
}

// catalog is GET /v2/_catalog: the repositories of the caller's project.
func (g *Registry) catalog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed()
	}
	caller, err := g.cfg.Auth.Authenticate(r.Context(), r, "")
	if err != nil {
		return err
	}
	repos := []string{}
	if id := caller.Identity; id != nil && id.ProjectID != "" {
		names, err := g.cfg.Store.FindRepositories(r.Context(), caller.viewer(), id.ProjectID)
		if err != nil {
			return err
		}
		prefix := strings.ToLower(id.ProjectName)
		if !componentRE.MatchString(prefix) {
			prefix = id.ProjectID
		}
		for _, n := range names {
			if full := prefix + "/" + n; len(full) <= maxNameLength {
				if _, _, why := splitName(full); why == "" {
					repos = append(repos, full)
				}
			}
		}
	}
	sort.Strings(repos)
	page, next, err := paginate(r, repos)
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("Link", `</v2/_catalog?n=`+r.URL.Query().Get("n")+`&last=`+url.QueryEscape(next)+`>; rel="next"`)
	}
	return writeJSON(w, map[string]any{"repositories": page})
}

// paginate applies ?n= and ?last= to a sorted list.
func paginate(r *http.Request, all []string) (page []string, next string, err error) {
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
		all = all[i:]
	}
	page = all
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 {
			return nil, "", newErr(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
		}
		if n < len(all) {
			page = all[:n]
			if n > 0 {
				next = page[n-1]
			}
		}
	}
	if page == nil {
		page = []string{}
	}
	return page, next, nil
}

func writeJSON(w http.ResponseWriter, v any) error {
	httpx.WriteJSON(w, http.StatusOK, v)
	return nil
}
