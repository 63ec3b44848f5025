package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"berth/internal/apierr"
)

// Viewer is who is looking: it decides which images exist for them.
type Viewer struct {
	ProjectID string
	Admin     bool
}

// CanSee reports whether v may see img without asking about members
// (Glance's get_image policy): admins see everything, everyone sees
// public and community images, private and shared images are seen by
// their owner. A shared image is also seen by its members: Store.CanSee.
func (v Viewer) CanSee(img *Image) bool {
	if v.Admin {
		return true
	}
	switch img.Visibility {
	case VisibilityPublic, VisibilityCommunity:
		return true
	}
	return v.ProjectID != "" && img.OwnerID() == v.ProjectID
}

// CanSee is Viewer.CanSee that also lets the members of a shared image
// (whatever their member status) see it.
func (s *Store) CanSee(ctx context.Context, v Viewer, img *Image) (bool, error) {
	if v.CanSee(img) {
		return true, nil
	}
	if img.Visibility != VisibilityShared {
		return false, nil
	}
	return s.IsMember(ctx, img.ID, v.ProjectID)
}

// canSeeClause is the SQL form of Store.CanSee for images aliased a.
func canSeeClause(q *query, v Viewer, a string) string {
	if v.Admin {
		return "TRUE"
	}
	if v.ProjectID == "" {
		return "(" + a + ".visibility IN ('public', 'community'))"
	}
	p := q.arg(v.ProjectID)
	return "(" + a + ".visibility IN ('public', 'community') OR " + a + ".owner = " + p +
		" OR (" + a + ".visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = " + a +
		".id AND m.member = " + p + ")))"
}

// SortKey is one key of a listing's order.
type SortKey struct {
	Key  string // one of SortKeys
	Desc bool
}

// sortExprs maps the sort keys Glance accepts to total-order SQL
// expressions (NULLs folded so keyset pagination can compare them).
var sortExprs = map[string]string{
	"name":             "COALESCE(name, '')",
	"status":           "status",
	"container_format": "COALESCE(container_format, '')",
	"disk_format":      "COALESCE(disk_format, '')",
	"size":             "COALESCE(size, -1)",
	"id":               "id",
	"created_at":       "created_at",
	"updated_at":       "updated_at",
}

// SortKeys are the keys a listing can be sorted by, in Glance's order.
var SortKeys = []string{"name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"}

// ImageFilter selects and orders images. Empty fields match anything.
type ImageFilter struct {
	Viewer Viewer
	// Visibility is "", "all" or one visibility. "" lists what Glance lists
	// by default: public images and the viewer's own; "all" adds community
	// images of other projects.
	Visibility       string
	IDs              []string // any of
	Names            []string // any of
	Statuses         []string // any of
	ContainerFormats []string // any of
	DiskFormats      []string // any of
	Owner            *string
	Tags             []string // all of
	Hidden           bool     // list hidden images instead of visible ones
	Protected        *bool
	SizeMin, SizeMax *int64
	Properties       map[string]string // extra properties that must match exactly
	// MemberStatus selects which images shared with the viewer are listed:
	// "" (accepted, Glance's default), pending, rejected or all.
	MemberStatus string
	// CreatedAt and UpdatedAt are time conditions that must all hold.
	CreatedAt, UpdatedAt []TimeFilter

	Marker string // list after this image id
	Limit  int    // 0 means no limit
	Sort   []SortKey
}

// TimeFilter is Glance's created_at/updated_at filter, e.g. gte:<time>.
type TimeFilter struct {
	Op   string // gt, gte, lt, lte, eq, neq
	Time time.Time
}

var timeOps = map[string]string{"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=", "neq": "<>"}

// ValidTimeOp reports whether op is one of Glance's time operators.
func ValidTimeOp(op string) bool { _, ok := timeOps[op]; return ok }

type query struct {
	where []string
	args  []any
}

func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

func (q *query) in(col string, vals []string) {
	if len(vals) > 0 {
		q.where = append(q.where, col+" = ANY("+q.arg(pq.StringArray(vals))+")")
	}
}

// visibilityClause is the SQL condition for what v may list with the
// visibility filter vis, as Glance lists: by default public images, the
// viewer's own, and shared images the viewer accepted (member_status
// chooses which memberships count); "all" adds community images;
// "shared" lists shared images the viewer owns or is a member of.
func visibilityClause(q *query, v Viewer, vis, memberStatus string) string {
	if v.Admin {
		if vis == "" || vis == "all" {
			return "TRUE"
		}
		return "visibility = " + q.arg(vis)
	}
	if v.ProjectID == "" {
		switch vis {
		case "":
			return "visibility = 'public'"
		case "all":
			return "visibility IN ('public', 'community')"
		case VisibilityPublic, VisibilityCommunity:
			return "visibility = " + q.arg(vis)
		}
		return "FALSE"
	}
	if vis == VisibilityPublic || vis == VisibilityCommunity {
		return "visibility = " + q.arg(vis)
	}
	p := q.arg(v.ProjectID)
	statusCond := ""
	switch memberStatus {
	case "":
		statusCond = " AND m.status = 'accepted'"
	case "all":
	default:
		statusCond = " AND m.status = " + q.arg(memberStatus)
	}
	member := "(visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = images.id AND m.member = " +
		p + statusCond + "))"
	switch vis {
	case "":
		return "(visibility = 'public' OR owner = " + p + " OR " + member + ")"
	case "all":
		return "(visibility IN ('public', 'community') OR owner = " + p + " OR " + member + ")"
	case VisibilityShared:
		return "(visibility = 'shared' AND (owner = " + p + " OR " + member + "))"
	default: // private: only one's own
		return "(visibility = " + q.arg(vis) + " AND owner = " + p + ")"
	}
}

// FindImages lists the images f selects, in f's order. A marker that does
// not exist for the viewer is Invalid, as is an unknown sort key.
func (s *Store) FindImages(ctx context.Context, f ImageFilter) ([]*Image, error) {
	q := &query{}
	q.where = append(q.where, visibilityClause(q, f.Viewer, f.Visibility, f.MemberStatus))
	q.in("id::text", f.IDs)
	q.in("name", f.Names)
	q.in("status", f.Statuses)
	q.in("container_format", f.ContainerFormats)
	q.in("disk_format", f.DiskFormats)
	if f.Owner != nil {
		q.where = append(q.where, "owner = "+q.arg(*f.Owner))
	}
	if len(f.Tags) > 0 {
		q.where = append(q.where, "tags @> "+q.arg(pq.StringArray(f.Tags)))
	}
	q.where = append(q.where, "os_hidden = "+q.arg(f.Hidden))
	if f.Protected != nil {
		q.where = append(q.where, "protected = "+q.arg(*f.Protected))
	}
	if f.SizeMin != nil {
		q.where = append(q.where, "size >= "+q.arg(*f.SizeMin))
	}
	if f.SizeMax != nil {
		q.where = append(q.where, "size <= "+q.arg(*f.SizeMax))
	}
	for k, v := range f.Properties {
		q.where = append(q.where, "properties ->> "+q.arg(k)+" = "+q.arg(v))
	}
	for _, tf := range f.CreatedAt {
		q.where = append(q.where, "date_trunc('second', created_at) "+timeOps[tf.Op]+" "+q.arg(tf.Time.UTC()))
	}
	for _, tf := range f.UpdatedAt {
		q.where = append(q.where, "date_trunc('second', updated_at) "+timeOps[tf.Op]+" "+q.arg(tf.Time.UTC()))
	}

	keys := append([]SortKey(nil), f.Sort...)
	if len(keys) == 0 {
		keys = []SortKey{{Key: "created_at", Desc: true}}
	}
	hasID := false
	for _, k := range keys {
		if _, ok := sortExprs[k.Key]; !ok {
			return nil, apierr.Invalidf("Invalid sort key: %s. It must be one of the following: %s.",
				k.Key, strings.Join(SortKeys, ", "))
		}
		hasID = hasID || k.Key == "id"
	}
	if !hasID {
		keys = append(keys, SortKey{Key: "id", Desc: keys[len(keys)-1].Desc})
	}

	if f.Marker != "" {
		m, err := s.FindImageByID(ctx, f.Marker)
		if err != nil {
			return nil, apierr.Invalidf("marker %s could not be found", f.Marker)
		}
		if ok, err := s.CanSee(ctx, f.Viewer, m); err != nil || !ok {
			return nil, apierr.Invalidf("marker %s could not be found", f.Marker)
		}
		// Keyset: rows strictly after the marker in the sort order.
		mid := q.arg(f.Marker)
		var ors []string
		for i, k := range keys {
			var ands []string
			for _, prev := range keys[:i] {
				e := sortExprs[prev.Key]
				ands = append(ands, fmt.Sprintf("%s = (SELECT %s FROM images WHERE id = %s)", e, e, mid))
			}
			op := ">"
			if k.Desc {
				op = "<"
			}
			e := sortExprs[k.Key]
			ands = append(ands, fmt.Sprintf("%s %s (SELECT %s FROM images WHERE id = %s)", e, op, e, mid))
			ors = append(ors, "("+strings.Join(ands, " AND ")+")")
		}
		q.where = append(q.where, "("+strings.Join(ors, " OR ")+")")
	}

	var order []string
	for _, k := range keys {
		dir := "ASC"
		if k.Desc {
			dir = "DESC"
		}
		order = append(order, sortExprs[k.Key]+" "+dir)
	}
	sqlText := `SELECT ` + imageColumns + ` FROM images WHERE ` + strings.Join(q.where, " AND ") +
		` ORDER BY ` + strings.Join(order, ", ")
	if f.Limit > 0 {
		sqlText += " LIMIT " + q.arg(f.Limit)
	}
	var out []*Image
	if err := s.db.SelectContext(ctx, &out, sqlText, q.args...); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out, nil
}
