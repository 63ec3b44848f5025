package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Flavor is a flavor row.
type Flavor struct {
	ID          string          `db:"id"`
	Name        string          `db:"name"`
	VCPUs       int             `db:"vcpus"`
	RAMMB       int             `db:"ram_mb"`
	DiskGB      int             `db:"disk_gb"`
	EphemeralGB int             `db:"ephemeral_gb"`
	SwapMB      int             `db:"swap_mb"`
	RxTxFactor  float64         `db:"rxtx_factor"`
	IsPublic    bool            `db:"is_public"`
	Disabled    bool            `db:"disabled"`
	Description *string         `db:"description"`
	ExtraSpecs  json.RawMessage `db:"extra_specs"`
	CreatedAt   time.Time       `db:"created_at"`
}

// Specs decodes the extra specs.
func (f *Flavor) Specs() map[string]string {
	m := map[string]string{}
	_ = json.Unmarshal(f.ExtraSpecs, &m)
	return m
}

// FlavorFilter narrows ListFlavors.
type FlavorFilter struct {
	// IsPublic: nil = public only (non-admin default), or as given; All
	// lists public and private (admin's is_public=None).
	IsPublic *bool
	All      bool
	// ProjectID, when set, also lists the private flavors it may use.
	ProjectID string
	MinRAM    int
	MinDisk   int
	Marker    string
	Limit     int
	SortKey   string
	SortDir   string
}

const flavorCols = `id, name, vcpus, ram_mb, disk_gb, ephemeral_gb, swap_mb, rxtx_factor,
	is_public, disabled, description, extra_specs, created_at`

var flavorSortKeys = map[string]string{
	"flavorid": "id", "id": "id", "name": "name", "memory_mb": "ram_mb", "ram": "ram_mb",
	"vcpus": "vcpus", "root_gb": "disk_gb", "disk": "disk_gb", "created_at": "created_at",
}

// ListFlavors lists live flavors. Nova's default order is flavorid asc.
func (s *Store) ListFlavors(ctx context.Context, f FlavorFilter) ([]Flavor, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	where = append(where, "deleted_at IS NULL")
	if !f.All {
		pub := true
		if f.IsPublic != nil {
			pub = *f.IsPublic
		}
		if pub && f.ProjectID != "" {
			where = append(where, "(is_public OR id IN (SELECT flavor_id FROM flavor_access WHERE project_id = "+arg(f.ProjectID)+"))")
		} else {
			where = append(where, "is_public = "+arg(pub))
		}
	}
	if f.MinRAM > 0 {
		where = append(where, "ram_mb >= "+arg(f.MinRAM))
	}
	if f.MinDisk > 0 {
		where = append(where, "disk_gb >= "+arg(f.MinDisk))
	}
	col, ok := flavorSortKeys[f.SortKey]
	if f.SortKey == "" {
		col, ok = "id", true
	}
	if !ok {
		return nil, apierr.Invalidf("Invalid sort_key %q.", f.SortKey)
	}
	dir := "ASC"
	switch strings.ToLower(f.SortDir) {
	case "", "asc":
	case "desc":
		dir = "DESC"
	default:
		return nil, apierr.Invalidf("Invalid sort_dir %q.", f.SortDir)
	}
	var out []Flavor
	err := s.readTx(ctx, func(tx *sqlx.Tx) error {
		if f.Marker != "" {
			var mk Flavor
			err := tx.GetContext(ctx, &mk, `SELECT `+flavorCols+` FROM flavors WHERE id = $1 AND deleted_at IS NULL`, f.Marker)
			if err != nil {
				return pgdb.NotFound(err, fmt.Sprintf("marker [%s] not found", f.Marker))
			}
			cmpOp := ">"
			if dir == "DESC" {
				cmpOp = "<"
			}
			var mv any
			switch col {
			case "id":
				mv = mk.ID
			case "name":
				mv = mk.Name
			case "ram_mb":
				mv = mk.RAMMB
			case "vcpus":
				mv = mk.VCPUs
			case "disk_gb":
				mv = mk.DiskGB
			case "created_at":
				mv = mk.CreatedAt
			}
			where = append(where, fmt.Sprintf("(%s, id) %s (%s, %s)", col, cmpOp, arg(mv), arg(mk.ID)))
		}
		q := `SELECT ` + flavorCols + ` FROM flavors WHERE ` + strings.Join(where, " AND ") +
			fmt.Sprintf(" ORDER BY %s %s, id %s", col, dir, dir)
		if f.Limit > 0 {
			q += " LIMIT " + arg(f.Limit)
		}
		return tx.SelectContext(ctx, &out, q, args...)
	})
	return out, err
}

// FindFlavor returns a live flavor by id, NotFound otherwise.
func (s *Store) FindFlavor(ctx context.Context, id string) (*Flavor, error) {
	var f Flavor
	err := s.db.GetContext(ctx, &f, `SELECT `+flavorCols+` FROM flavors WHERE id = $1 AND deleted_at IS NULL`, id)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Flavor %s could not be found.", id))
	}
	return &f, nil
}

// CreateFlavor adds a flavor; Conflict when its id or name is taken.
func (s *Store) CreateFlavor(ctx context.Context, f Flavor) (*Flavor, error) {
	var out Flavor
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		var n int
		if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM flavors WHERE id = $1`, f.ID); err != nil {
			return err
		}
		if n > 0 {
			return apierr.Conflictf("Flavor with ID %s already exists.", f.ID)
		}
		err := tx.GetContext(ctx, &out, `INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, ephemeral_gb,
			swap_mb, rxtx_factor, is_public, description) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
			RETURNING `+flavorCols, f.ID, f.Name, f.VCPUs, f.RAMMB, f.DiskGB, f.EphemeralGB, f.SwapMB,
			f.RxTxFactor, f.IsPublic, f.Description)
		if pgdb.IsUniqueViolation(err) {
			return apierr.Conflictf("Flavor with name %s already exists.", f.Name)
		}
		return err
	})
	return &out, err
}

// SetFlavorDescription changes a live flavor's description (2.55).
func (s *Store) SetFlavorDescription(ctx context.Context, id string, desc *string) (*Flavor, error) {
	var f Flavor
	err := s.db.GetContext(ctx, &f, `UPDATE flavors SET description = $2 WHERE id = $1 AND deleted_at IS NULL
		RETURNING `+flavorCols, id, desc)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Flavor %s could not be found.", id))
	}
	return &f, nil
}

// DeleteFlavor soft-deletes a flavor (servers keep their copy of it).
func (s *Store) DeleteFlavor(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE flavors SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.NotFoundf("Flavor %s could not be found.", id)
	}
	return nil
}

// UpdateExtraSpecs merges set into a flavor's extra specs and removes del
// (NotFound when del names a key that is not there).
func (s *Store) UpdateExtraSpecs(ctx context.Context, id string, set map[string]string, del string) (map[string]string, error) {
	var out map[string]string
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		var f Flavor
		if err := tx.GetContext(ctx, &f, `SELECT `+flavorCols+` FROM flavors WHERE id = $1 AND deleted_at IS NULL FOR UPDATE`, id); err != nil {
			return pgdb.NotFound(err, fmt.Sprintf("Flavor %s could not be found.", id))
		}
		specs := f.Specs()
		for k, v := range set {
			specs[k] = v
		}
		if del != "" {
			if _, ok := specs[del]; !ok {
				return apierr.NotFoundf("Flavor %s has no extra specs with key %s.", id, del)
			}
			delete(specs, del)
		}
		b, _ := json.Marshal(specs)
		if _, err := tx.ExecContext(ctx, `UPDATE flavors SET extra_specs = $2 WHERE id = $1`, id, b); err != nil {
			return err
		}
		out = specs
		return nil
	})
	return out, err
}

// FlavorAccess lists the projects that may use a private flavor.
func (s *Store) FlavorAccess(ctx context.Context, id string) ([]string, error) {
	var out []string
	err := s.db.SelectContext(ctx, &out, `SELECT project_id FROM flavor_access WHERE flavor_id = $1 ORDER BY project_id`, id)
	return out, err
}

// SetFlavorAccess grants (add) or revokes a project's access to a flavor.
func (s *Store) SetFlavorAccess(ctx context.Context, id, project string, add bool) error {
	f, err := s.FindFlavor(ctx, id)
	if err != nil {
		return err
	}
	if f.IsPublic {
		return apierr.Conflictf("Can not add access to a public flavor.")
	}
	if add {
		_, err = s.db.ExecContext(ctx, `INSERT INTO flavor_access (flavor_id, project_id) VALUES ($1, $2)`, id, project)
		if pgdb.IsUniqueViolation(err) {
			return apierr.Conflictf("Flavor access already exists for flavor %s and project %s combination.", id, project)
		}
		return err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM flavor_access WHERE flavor_id = $1 AND project_id = $2`, id, project)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.NotFoundf("Flavor access not found for %s / %s combination.", id, project)
	}
	return nil
}

// FlavorVisible reports whether project may use flavor f.
func (s *Store) FlavorVisible(ctx context.Context, f *Flavor, project string) (bool, error) {
	if f.IsPublic {
		return true, nil
	}
	var n int
	err := s.db.GetContext(ctx, &n, `SELECT count(*) FROM flavor_access WHERE flavor_id = $1 AND project_id = $2`, f.ID, project)
	return n > 0, err
}
