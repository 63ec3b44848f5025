package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/region/novastate"
)

// ServerFilter narrows ListServers, as Nova's list filters do.
type ServerFilter struct {
	Scope Scope
	// ProjectID restricts an all-projects listing to one project.
	ProjectID string
	// NameRegex is a POSIX regular expression on the name.
	NameRegex string
	// IPRegex matches a fixed IP of the server (POSIX regex).
	IPRegex      string
	Status       *novastate.Filter
	Host         string
	ImageID      string
	FlavorID     string
	ChangesSince *time.Time
	Marker       string
	Limit        int
	// Tag filters (2.26): all of Tags, any of TagsAny, not all of NotTags,
	// none of NotTagsAny.
	Tags, TagsAny, NotTags, NotTagsAny []string
	// ChangesBefore (2.66) bounds updated_at from above; like
	// ChangesSince it includes deleted servers.
	ChangesBefore *time.Time
}

// listQuery is the query listing the servers f selects, newest first
// (Nova's created_at desc), reading cols, with its arguments. The page
// after a marker is found in the same statement; when it comes back
// empty, checkMarker tells an unknown marker from the end of the list.
func (f *ServerFilter) listQuery(cols string) (string, []any, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.ChangesSince != nil {
		// changes-since includes deleted servers, as in Nova.
		where = append(where, "updated_at >= "+arg(*f.ChangesSince))
	}
	if f.ChangesBefore != nil {
		where = append(where, "updated_at <= "+arg(*f.ChangesBefore))
	}
	if f.ChangesSince == nil && f.ChangesBefore == nil {
		where = append(where, "deleted_at IS NULL")
	}
	if !f.Scope.AllProjects {
		where = append(where, "project_id = "+arg(f.Scope.ProjectID))
	} else if f.ProjectID != "" {
		where = append(where, "project_id = "+arg(f.ProjectID))
	}
	if f.NameRegex != "" {
		where = append(where, "name ~ "+arg(f.NameRegex))
	}
	if f.IPRegex != "" {
		where = append(where, "EXISTS (SELECT 1 FROM ports p WHERE p.server_id = servers.id AND host(p.ip_address) ~ "+arg(f.IPRegex)+")")
	}
	if f.Status != nil {
		where = append(where, "vm_state = ANY("+arg(pq.Array(f.Status.VMStates))+")")
		if f.Status.TaskStates != nil {
			where = append(where, "task_state = ANY("+arg(pq.Array(f.Status.TaskStates))+")")
		} else if len(f.Status.Exclude) > 0 {
			where = append(where, "(task_state IS NULL OR NOT task_state = ANY("+arg(pq.Array(f.Status.Exclude))+"))")
		}
	}
	if f.Host != "" {
		where = append(where, "host = "+arg(f.Host))
	}
	if f.ImageID != "" {
		where = append(where, "image_id = "+arg(f.ImageID))
	}
	if f.FlavorID != "" {
		where = append(where, "flavor_id = "+arg(f.FlavorID))
	}
	if len(f.Tags) > 0 {
		where = append(where, "tags @> "+arg(pq.StringArray(f.Tags)))
	}
	if len(f.TagsAny) > 0 {
		where = append(where, "tags && "+arg(pq.StringArray(f.TagsAny)))
	}
	if len(f.NotTags) > 0 {
		where = append(where, "NOT tags @> "+arg(pq.StringArray(f.NotTags)))
	}
	if len(f.NotTagsAny) > 0 {
		where = append(where, "NOT tags && "+arg(pq.StringArray(f.NotTagsAny)))
	}
	if f.Marker != "" {
		if !validUUID(f.Marker) {
			return "", nil, markerNotFound(f.Marker)
		}
		// A marker that is not a server matches nothing: see markerExists.
		m := arg(f.Marker)
		where = append(where, "(created_at, id) < (SELECT created_at, id FROM servers WHERE id = "+m+")")
	}
	q := `SELECT ` + cols + ` FROM servers WHERE ` + strings.Join(where, " AND ") + ` ORDER BY created_at DESC, id DESC`
	if f.Limit > 0 {
		q += " LIMIT " + arg(f.Limit)
	}
	return q, args, nil
}

func markerNotFound(m string) error { return apierr.Invalidf("marker [%s] not found", m) }

// checkMarker is the error of an empty page: none, unless the marker is
// not a server (deleted ones too: Nova pages on past them).
func (f *ServerFilter) checkMarker(ctx context.Context, q sqlx.QueryerContext) error {
	if f.Marker == "" {
		return nil
	}
	var n int
	if err := sqlx.GetContext(ctx, q, &n, `SELECT count(*) FROM servers WHERE id = $1`, f.Marker); err != nil {
		return err
	}
	if n == 0 {
		return markerNotFound(f.Marker)
	}
	return nil
}

// listError maps the listing's errors: a bad regular expression is the
// caller's.
func listError(err error) error {
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "2201B" { // invalid_regular_expression
		return apierr.Invalidf("Invalid regular expression for name filter: %s", pe.Message)
	}
	return err
}

// ListServers lists servers (live ones unless a changes-since window asks
// for deleted ones too), newest first, whole rows with their ports.
func (s *Store) ListServers(ctx context.Context, f ServerFilter) ([]Server, error) {
	var out []Server
	err := s.readTx(ctx, func(tx *sqlx.Tx) error {
		q, args, err := f.listQuery(serverCols)
		if err != nil {
			return err
		}
		if err := tx.SelectContext(ctx, &out, q, args...); err != nil {
			return listError(err)
		}
		if len(out) == 0 {
			return f.checkMarker(ctx, tx)
		}
		return withPorts(ctx, tx, out)
	})
	return out, err
}

// withPorts fills in the ports and security group names of srvs.
func withPorts(ctx context.Context, q sqlx.QueryerContext, srvs []Server) error {
	ids := serverIDs(srvs)
	ports, err := portsOf(ctx, q, ids)
	if err != nil {
		return err
	}
	groups, err := groupNamesOf(ctx, q, ids)
	if err != nil {
		return err
	}
	for i := range srvs {
		srvs[i].Ports = ports[srvs[i].ID]
		srvs[i].SecurityGroupNames = groups[srvs[i].ID]
	}
	return nil
}

func serverIDs(srvs []Server) []string {
	ids := make([]string, len(srvs))
	for i := range srvs {
		ids[i] = srvs[i].ID
	}
	return ids
}

// ServerVersion is the version of everything a server's API body shows:
// it is different after any change to the server's row, its ports, their
// security groups, or the name of a network or security group. (The row's
// xmin is renewed by every UPDATE of the row; triggers rewrite the row
// when its ports or their groups change, and count renames in an epoch:
// see migrations/region/00013_server_render_version.sql.) Equal versions
// mean equal bodies, for the same request options.
type ServerVersion struct {
	// Row is the xmin of the server's row.
	Row uint32
	// Names is the rename epoch of networks and security groups.
	Names int64
}

// ServerStamp is a listed server's id and version, and the one column a
// listing may need besides (StampText).
type ServerStamp struct {
	ID      string
	Version ServerVersion
	// Name (StampName) or Host (StampHost): "" when not asked for.
	Name, Host string
}

// StampText is the column ListServerStamps reads besides id and version.
type StampText int

// The columns a stamp may carry.
const (
	StampNothing StampText = iota
	StampHost              // host_status needs it
	StampName              // the brief list shows it
)

// ListServerStamps lists the servers f selects, as ListServers does, but
// reads only their stamps (with text), in one statement of narrow rows;
// need is given them and returns the indexes of those whose whole rows
// (with ports) are wanted, which are read after and returned by id. Those
// rows may be newer than their stamps, never older; a server deleted in
// between has no row. A nil need reads no rows.
//
// (One text value for the whole page, string_agg of the stamps, saved
// region a third of its reading but cost PostgreSQL twice as much: the
// growing buffer and the aggregate's sort allocate and free memory on
// every page. Rows cost less in all.)
func (s *Store) ListServerStamps(ctx context.Context, f ServerFilter, text StampText, need func([]ServerStamp) []int) ([]ServerStamp, map[string]*Server, error) {
	t := `''`
	switch text {
	case StampHost:
		t = `coalesce(host, '')`
	case StampName:
		t = `name`
	}
	q, args, err := f.listQuery(`id, xmin, (SELECT n FROM server_render_epoch), ` + t)
	if err != nil {
		return nil, nil, err
	}
	stamps, err := scanStamps(ctx, s.db, q, args, text, f.Limit)
	if err != nil {
		return nil, nil, listError(err)
	}
	if len(stamps) == 0 {
		return nil, nil, f.checkMarker(ctx, s.db)
	}
	if need == nil {
		return stamps, nil, nil
	}
	idx := need(stamps)
	if len(idx) == 0 {
		return stamps, nil, nil
	}
	ids := make([]string, len(idx))
	for i, k := range idx {
		ids[i] = stamps[k].ID
	}
	var full []Server
	if err := sqlx.SelectContext(ctx, s.db, &full, `SELECT `+serverCols+` FROM servers WHERE id = ANY($1::uuid[])`,
		pq.Array(ids)); err != nil {
		return nil, nil, err
	}
	if err := withPorts(ctx, s.db, full); err != nil {
		return nil, nil, err
	}
	rows := make(map[string]*Server, len(full))
	for i := range full {
		rows[full[i].ID] = &full[i]
	}
	return stamps, rows, nil
}

// scanStamps reads the stamps q lists (id, xmin, rename epoch, text). The
// columns come as raw bytes and are parsed here: this runs for every
// server of every page.
func scanStamps(ctx context.Context, db sqlx.QueryerContext, q string, args []any, text StampText, limit int) ([]ServerStamp, error) {
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := make([]ServerStamp, 0, max(limit, 0))
	var id, xmin, names, txt sql.RawBytes
	for rs.Next() {
		if err := rs.Scan(&id, &xmin, &names, &txt); err != nil {
			return nil, err
		}
		x, err := strconv.ParseUint(string(xmin), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("server %s: xmin %q: %w", id, xmin, err)
		}
		n, err := strconv.ParseInt(string(names), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("server %s: rename epoch %q: %w", id, names, err)
		}
		st := ServerStamp{ID: string(id), Version: ServerVersion{Row: uint32(x), Names: n}}
		switch text {
		case StampHost:
			st.Host = string(txt)
		case StampName:
			st.Name = string(txt)
		}
		out = append(out, st)
	}
	return out, rs.Err()
}

// FindServerStamped is FindServer for a cache of rendered servers: it
// returns the stamp of a live server visible in scope, and the whole
// server (with ports) only when need(stamp) says so. The stamp and the row
// come from one statement; the ports, read after, may be newer than the
// stamp, never older.
func (s *Store) FindServerStamped(ctx context.Context, sc Scope, id string, need func(ServerStamp) bool) (ServerStamp, *Server, error) {
	var st ServerStamp
	notFound := apierr.NotFoundf("Instance %s could not be found.", id)
	if !validUUID(id) {
		return st, nil, notFound
	}
	var row struct {
		Server
		Row   uint32 `db:"stamp_xmin"`
		Names int64  `db:"stamp_names"`
	}
	err := sqlx.GetContext(ctx, s.db, &row, `SELECT `+serverCols+`, xmin AS stamp_xmin,
		(SELECT n FROM server_render_epoch) AS stamp_names
		FROM servers WHERE id = $1 AND deleted_at IS NULL AND ($2 OR project_id = $3)`, id, sc.AllProjects, sc.ProjectID)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil, notFound
	} else if err != nil {
		return st, nil, err
	}
	srv := &row.Server
	st = ServerStamp{ID: srv.ID, Name: srv.Name, Host: srv.Host.String, Version: ServerVersion{Row: row.Row, Names: row.Names}}
	if !need(st) {
		return st, nil, nil
	}
	one := []Server{*srv}
	if err := withPorts(ctx, s.db, one); err != nil {
		return st, nil, err
	}
	return st, &one[0], nil
}
