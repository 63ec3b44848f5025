package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Project is a Keystone project as seen in a token.
type Project struct {
	ID       string `db:"id"`
	Name     string `db:"name"`
	DomainID string `db:"domain_id"`
}

// noteEvery is how often NoteProject writes the same project again.
const noteEvery = 10 * time.Minute

// projectNotes remembers which projects NoteProject wrote lately.
type projectNotes struct {
	mu   sync.Mutex
	seen map[Project]time.Time
}

// NoteProject remembers a project's name (registry repository names start
// with it), writing it at most once per noteEvery per process. A project
// renamed, or a name reused by a new project, replaces the old entry.
func (s *Store) NoteProject(ctx context.Context, p Project) error {
	if p.ID == "" || p.Name == "" {
		return nil
	}
	s.notes.mu.Lock()
	if s.notes.seen == nil || len(s.notes.seen) > 100000 {
		s.notes.seen = map[Project]time.Time{}
	}
	last, ok := s.notes.seen[p]
	fresh := ok && time.Since(last) < noteEvery
	if !fresh {
		s.notes.seen[p] = time.Now()
	}
	s.notes.mu.Unlock()
	if fresh {
		return nil
	}
	err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM projects WHERE lower(name) = lower($1) AND domain_id = $2 AND id <> $3`,
			p.Name, p.DomainID, p.ID); err != nil {
			return fmt.Errorf("note project: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO projects (id, name, domain_id, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, domain_id = EXCLUDED.domain_id, updated_at = EXCLUDED.updated_at`,
			p.ID, p.Name, p.DomainID, s.now())
		if err != nil {
			return fmt.Errorf("note project: %w", err)
		}
		return nil
	})
	if err != nil {
		s.notes.mu.Lock()
		delete(s.notes.seen, p)
		s.notes.mu.Unlock()
	}
	return err
}

// FindProject returns the project whose id is ref or whose name is ref
// (case-insensitively). NotFound if none is known; Conflict if the name
// is ambiguous (the same name in several domains).
func (s *Store) FindProject(ctx context.Context, ref string) (*Project, error) {
	var ps []Project
	err := s.db.SelectContext(ctx, &ps, `SELECT id, name, domain_id FROM projects WHERE id = $1
		UNION SELECT id, name, domain_id FROM projects WHERE lower(name) = lower($1)`, ref)
	if err != nil {
		return nil, fmt.Errorf("find project: %w", err)
	}
	for _, p := range ps {
		if p.ID == ref {
			return &p, nil
		}
	}
	switch len(ps) {
	case 0:
		return nil, apierr.NotFoundf("No project %s is known to the image service", ref)
	case 1:
		return &ps[0], nil
	}
	return nil, apierr.Conflictf("Project name %s is used in several domains; use the project id", ref)
}

// Tag is a registry tag: <project>/<repository>:<tag> → image.
type Tag struct {
	ProjectID  string    `db:"project_id"`
	Repository string    `db:"repository"`
	Tag        string    `db:"tag"`
	ImageID    string    `db:"image_id"`
	UpdatedAt  time.Time `db:"updated_at"`
}

func (s *Store) putTag(ctx context.Context, tx *sqlx.Tx, t Tag) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO registry_tags (project_id, repository, tag, image_id, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (project_id, repository, tag) DO UPDATE SET image_id = EXCLUDED.image_id, updated_at = EXCLUDED.updated_at`,
		t.ProjectID, t.Repository, t.Tag, t.ImageID, s.now())
	if err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	return nil
}

// PutTag points a tag at an image.
func (s *Store) PutTag(ctx context.Context, t Tag) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error { return s.putTag(ctx, tx, t) })
}

// FindTag returns a tag, or NotFound.
func (s *Store) FindTag(ctx context.Context, project, repo, tag string) (*Tag, error) {
	var t Tag
	err := s.db.GetContext(ctx, &t, `SELECT project_id, repository, tag, image_id, updated_at FROM registry_tags
		WHERE project_id = $1 AND repository = $2 AND tag = $3`, project, repo, tag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apierr.NotFoundf("No tag %s:%s", repo, tag)
	}
	if err != nil {
		return nil, fmt.Errorf("find tag: %w", err)
	}
	return &t, nil
}

// DeleteTag removes a tag (the image stays). NotFound if there is none.
func (s *Store) DeleteTag(ctx context.Context, project, repo, tag string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM registry_tags WHERE project_id = $1 AND repository = $2 AND tag = $3`,
		project, repo, tag)
	if err != nil {
		return fmt.Errorf("delete tag: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.NotFoundf("No tag %s:%s", repo, tag)
	}
	return nil
}

// RepoTag is a tag of a repository with the image it names.
type RepoTag struct {
	Tag   string `db:"tag"`
	Image *Image
}

// FindRepositoryImages lists the images of repository repo of project
// owner that v can see and that can be pulled (docker, with a manifest),
// with the tag each is reachable by: registry tags first, then the
// images whose Glance name is "<repo>:<tag>" (or "<repo>" for latest)
// where no registry tag of that name exists. Ordered by tag.
func (s *Store) FindRepositoryImages(ctx context.Context, v Viewer, owner, repo string) ([]RepoTag, error) {
	q := &query{}
	see := canSeeClause(q, v, "i")
	ownerArg, repoArg := q.arg(owner), q.arg(repo)
	prefix := q.arg(strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(repo) + ":%")
	cols := prefixed("i", imageColumns)
	sqlText := `SELECT * FROM (
			SELECT t.tag AS rtag, ` + cols + ` FROM registry_tags t JOIN images i ON i.id = t.image_id
			WHERE t.project_id = ` + ownerArg + ` AND t.repository = ` + repoArg + `
			  AND i.manifest_digest IS NOT NULL AND ` + see + `
			UNION ALL
			(SELECT DISTINCT ON (n.rtag) n.rtag, ` + prefixed("n", imageColumns) + ` FROM (
				SELECT CASE WHEN i.name = ` + repoArg + ` THEN 'latest' ELSE substr(i.name, length(` + repoArg + `) + 2) END AS rtag, i.*
				FROM images i
				WHERE i.owner = ` + ownerArg + ` AND i.container_format = 'docker' AND i.manifest_digest IS NOT NULL
				  AND i.status IN ('active', 'deactivated') AND (i.name = ` + repoArg + ` OR i.name LIKE ` + prefix + `)
				  AND ` + see + `
			) n
			WHERE NOT EXISTS (SELECT 1 FROM registry_tags t
				WHERE t.project_id = ` + ownerArg + ` AND t.repository = ` + repoArg + ` AND t.tag = n.rtag)
			ORDER BY n.rtag, n.created_at DESC)
		) r ORDER BY rtag`
	rows, err := s.db.QueryxContext(ctx, sqlText, q.args...)
	if err != nil {
		return nil, fmt.Errorf("repository images: %w", err)
	}
	defer rows.Close()
	var out []RepoTag
	for rows.Next() {
		var r struct {
			Tag string `db:"rtag"`
			Image
		}
		if err := rows.StructScan(&r); err != nil {
			return nil, fmt.Errorf("repository images: %w", err)
		}
		img := r.Image
		out = append(out, RepoTag{Tag: r.Tag, Image: &img})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("repository images: %w", err)
	}
	return out, nil
}

func prefixed(alias, cols string) string {
	var out []string
	for _, c := range strings.Split(cols, ",") {
		out = append(out, alias+"."+strings.TrimSpace(c))
	}
	return strings.Join(out, ", ")
}

// FindImageByManifest returns the newest image of project owner (of any
// project when owner is ""), visible to v, whose manifest is digest.
// NotFound if there is none.
func (s *Store) FindImageByManifest(ctx context.Context, v Viewer, owner, digest string) (*Image, error) {
	q := &query{}
	see := canSeeClause(q, v, "i")
	where := `i.manifest_digest = ` + q.arg(digest) + ` AND ` + see
	if owner != "" {
		where += ` AND i.owner = ` + q.arg(owner)
	}
	var img Image
	err := s.db.GetContext(ctx, &img, `SELECT `+prefixed("i", imageColumns)+` FROM images i
		WHERE `+where+` ORDER BY i.created_at DESC LIMIT 1`, q.args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apierr.NotFoundf("No image with manifest %s", digest)
	}
	if err != nil {
		return nil, fmt.Errorf("find image by manifest: %w", err)
	}
	return &img, nil
}

// GrantBlob lets project use the blob digest (it uploaded it).
func (s *Store) GrantBlob(ctx context.Context, project, digest string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO blob_grants (project_id, digest, created_at) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, project, digest, s.now())
	if err != nil {
		return fmt.Errorf("grant blob: %w", err)
	}
	return nil
}

// BlobAccessible reports whether v may read the blob digest: v's project
// uploaded it, or an image v can see (and could download) is made of it.
func (s *Store) BlobAccessible(ctx context.Context, v Viewer, digest string) (bool, error) {
	q := &query{}
	d := q.arg(digest)
	see := canSeeClause(q, v, "i")
	usable := "i.status = 'active'"
	if v.Admin {
		usable = "i.status IN ('active', 'deactivated')"
	}
	grant := "FALSE"
	if v.ProjectID != "" {
		grant = "EXISTS (SELECT 1 FROM blob_grants g WHERE g.digest = " + d + " AND g.project_id = " + q.arg(v.ProjectID) + ")"
	}
	// Each branch is an index lookup (config, manifest, layer blob).
	var ok bool
	err := s.db.GetContext(ctx, &ok, `SELECT `+grant+`
		OR EXISTS (SELECT 1 FROM images i WHERE i.config_digest = `+d+` AND `+usable+` AND `+see+`)
		OR EXISTS (SELECT 1 FROM images i WHERE i.manifest_digest = `+d+` AND `+usable+` AND `+see+`)
		OR EXISTS (SELECT 1 FROM image_layers il JOIN images i ON i.id = il.image_id
			WHERE il.blob_digest = `+d+` AND `+usable+` AND `+see+`)`,
		q.args...)
	if err != nil {
		return false, fmt.Errorf("blob access: %w", err)
	}
	return ok, nil
}

// FindRepositories lists the repositories of project owner that v can
// pull from: tagged ones and the names of docker images ("<repo>:<tag>").
func (s *Store) FindRepositories(ctx context.Context, v Viewer, owner string) ([]string, error) {
	q := &query{}
	see := canSeeClause(q, v, "i")
	o := q.arg(owner)
	var out []string
	err := s.db.SelectContext(ctx, &out, `SELECT DISTINCT repo FROM (
			SELECT t.repository AS repo FROM registry_tags t JOIN images i ON i.id = t.image_id
			WHERE t.project_id = `+o+` AND `+see+`
			UNION
			SELECT split_part(i.name, ':', 1) AS repo FROM images i
			WHERE i.owner = `+o+` AND i.container_format = 'docker' AND i.manifest_digest IS NOT NULL
			  AND i.name IS NOT NULL AND i.name <> '' AND `+see+`
		) r ORDER BY repo`, q.args...)
	if err != nil {
		return nil, fmt.Errorf("repositories: %w", err)
	}
	return out, nil
}
