package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
	"berth/region/novastate"
	"berth/schema"
)

// Server is a server row with its ports.
type Server struct {
	ID                 string          `db:"id"`
	ProjectID          string          `db:"project_id"`
	UserID             string          `db:"user_id"`
	Name               string          `db:"name"`
	Description        *string         `db:"description"`
	Host               sql.NullString  `db:"host"`
	AvailabilityZone   string          `db:"availability_zone"`
	ImageID            string          `db:"image_id"`
	DockerImageID      string          `db:"docker_image_id"`
	FlavorID           string          `db:"flavor_id"`
	VCPUs              int             `db:"vcpus"`
	RAMMB              int             `db:"ram_mb"`
	DiskGB             int             `db:"disk_gb"`
	VMState            string          `db:"vm_state"`
	TaskState          sql.NullString  `db:"task_state"`
	PowerState         int             `db:"power_state"`
	Progress           int             `db:"progress"`
	DesiredState       string          `db:"desired_state"`
	Generation         int64           `db:"generation"`
	ObservedGeneration int64           `db:"observed_generation"`
	Containers         json.RawMessage `db:"containers"`
	Fault              []byte          `db:"fault"`
	Metadata           json.RawMessage `db:"metadata"`
	KeyName            sql.NullString  `db:"key_name"`
	UserData           sql.NullString  `db:"user_data"`
	AccessIPv4         string          `db:"access_ipv4"`
	AccessIPv6         string          `db:"access_ipv6"`
	Locked             bool            `db:"locked"`
	LaunchedAt         *time.Time      `db:"launched_at"`
	TerminatedAt       *time.Time      `db:"terminated_at"`
	CreatedAt          time.Time       `db:"created_at"`
	UpdatedAt          time.Time       `db:"updated_at"`
	DeletedAt          *time.Time      `db:"deleted_at"`
	RebootSeq          int64           `db:"reboot_seq"`
	RebootHard         bool            `db:"reboot_hard"`
	OldFlavor          []byte          `db:"old_flavor"`
	AuthorizedKeys     sql.NullString  `db:"authorized_keys"`
	Personality        json.RawMessage `db:"personality"`
	LockedBy           sql.NullString  `db:"locked_by"`
	Tags               pq.StringArray  `db:"tags"`
	ExtraSpecs         json.RawMessage `db:"extra_specs"`
	SetSpec            []byte          `db:"set_spec"`
	ReservationID      string          `db:"reservation_id"`
	// The flavor as it was when the server got it (microversion 2.47).
	FlavorName        string `db:"flavor_name"`
	FlavorEphemeralGB int    `db:"flavor_ephemeral_gb"`
	FlavorSwapMB      int    `db:"flavor_swap_mb"`

	Ports []Port `db:"-"`
	// SecurityGroupNames are the names of the groups on the server's
	// ports, de-duplicated and sorted (Nova's server body shows these).
	SecurityGroupNames []string `db:"-"`
}

// Status is the server's Nova status string.
func (s *Server) Status() string { return novastate.Status(s.VMState, s.TaskState.String) }

// FaultBody is the stored fault of a server in ERROR.
type FaultBody struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Created time.Time `json:"created"`
}

const serverCols = `id, project_id, user_id, name, description, host, availability_zone, image_id,
	docker_image_id, flavor_id, vcpus, ram_mb, disk_gb, vm_state, task_state, power_state, progress,
	desired_state, generation, observed_generation, containers, fault, metadata, key_name, user_data,
	access_ipv4, access_ipv6, locked, launched_at, terminated_at, created_at, updated_at, deleted_at,
	reboot_seq, reboot_hard, old_flavor, authorized_keys, personality, locked_by, tags, extra_specs, set_spec, reservation_id,
	flavor_name, flavor_ephemeral_gb, flavor_swap_mb`

// Scope is whose servers a caller may see: one project, or every project
// for an admin.
type Scope struct {
	ProjectID string
	// AllProjects lets an admin reach any project's server by id.
	AllProjects bool
}

// NewServer is what CreateServer needs.
type NewServer struct {
	ID               string
	ProjectID        string
	UserID           string
	Name             string
	Description      *string
	ImageID          string
	DockerImageID    string
	Flavor           *Flavor
	Metadata         map[string]string
	KeyName          string
	UserData         string
	AvailabilityZone string
	AccessIPv4       string
	AccessIPv6       string
	Networks         []NetworkRequest
	RequestID        string
	// AuthorizedKeys is the public key of key_name.
	AuthorizedKeys string
	// Files are personality files.
	Files []schema.SetFile
	// GroupID is the server group (scheduler hint "group") to join.
	GroupID string
	// Containers, for a set made with the set API.
	Containers []schema.SetContainer
	// ReservationID is shared by the servers of one create request.
	ReservationID string
	// RetryKey (RetryKey: the client's own request id) makes a retried
	// create return the server the first one made (see claimCreate).
	RetryKey string
	// Tags are the server's tags (microversion 2.52).
	Tags []string
}

// CreateServer records a new server and places it in one transaction: the
// first candidate host that still has room is claimed, the server's ports
// get their addresses, the "create" instance action is opened, and the
// host's agent is woken. With no candidate left the server is still
// created, in ERROR with Nova's "No valid host" fault, as Nova does.
func (s *Store) CreateServer(ctx context.Context, ns NewServer, candidates []string, grace time.Duration, noHostReason string) (*Server, error) {
	meta, _ := json.Marshal(ns.Metadata)
	if ns.Metadata == nil {
		meta = []byte("{}")
	}
	personality, _ := json.Marshal(ns.Files)
	if ns.Files == nil {
		personality = []byte("[]")
	}
	var setSpec []byte
	if len(ns.Containers) > 0 {
		setSpec, _ = json.Marshal(ns.Containers)
	}
	f := ns.Flavor
	var out *Server
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if ns.RetryKey != "" {
			prior, err := claimCreate(ctx, tx, ns)
			if err != nil {
				return err
			}
			if prior != "" {
				out, err = getServer(ctx, tx, Scope{AllProjects: true}, prior, false)
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO servers (id, project_id, user_id, name, description,
				availability_zone, image_id, docker_image_id, flavor_id, vcpus, ram_mb, disk_gb, vm_state,
				task_state, metadata, key_name, user_data, access_ipv4, access_ipv6, authorized_keys, personality,
				extra_specs, set_spec, reservation_id, tags)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25)`,
			ns.ID, ns.ProjectID, ns.UserID, ns.Name, ns.Description, ns.AvailabilityZone, ns.ImageID,
			ns.DockerImageID, f.ID, f.VCPUs, f.RAMMB, f.DiskGB, novastate.Building, novastate.TaskScheduling,
			meta, nullable(ns.KeyName), nullable(ns.UserData), ns.AccessIPv4, ns.AccessIPv6,
			nullable(ns.AuthorizedKeys), personality, specsOf(f), setSpec, ns.ReservationID, pq.StringArray(nonNil(ns.Tags)))
		if err != nil {
			if pgdb.IsUniqueViolation(err) {
				return apierr.Conflictf("Server %s already exists.", ns.ID)
			}
			return err
		}
		actionID, err := startAction(ctx, tx, ns.ID, "create", ns.RequestID, ns.ProjectID, ns.UserID)
		if err != nil {
			return err
		}
		if ns.GroupID != "" {
			if candidates, err = groupCandidates(ctx, tx, ns.GroupID, ns.ID, candidates); err != nil {
				return err
			}
		}
		host := ""
		for _, c := range candidates {
			ok, err := claimAndWake(ctx, tx, c, f.VCPUs, f.RAMMB, f.DiskGB, grace)
			if err != nil {
				return err
			}
			if ok {
				host = c
				break
			}
		}
		if err := addEvent(ctx, tx, actionID, "conductor_schedule_and_build_instances", host, host != ""); err != nil {
			return err
		}
		if host == "" {
			msg := "No valid host was found. " + noHostReason
			fault, _ := json.Marshal(FaultBody{Code: 500, Message: strings.TrimSpace(msg), Created: s.now().UTC()})
			_, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL, fault = $3,
				desired_state = 'deleted' WHERE id = $1`, ns.ID, novastate.Error, fault)
			if err != nil {
				return err
			}
			if err := finishAction(ctx, tx, actionID, strings.TrimSpace(msg)); err != nil {
				return err
			}
		} else {
			for i, nr := range ns.Networks {
				if err := nr.apply(ctx, tx, ns.ProjectID, ns.ID, i); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, `UPDATE servers SET host = $2, task_state = $3 WHERE id = $1`,
				ns.ID, host, novastate.TaskSpawning)
			if err != nil {
				return err
			}
			if err := openEvent(ctx, tx, actionID, "compute__do_build_and_run_instance", host); err != nil {
				return err
			}
			// claimAndWake has bumped the host's desired index and queued its NOTIFY.
		}
		if out, err = getServer(ctx, tx, Scope{AllProjects: true}, ns.ID, false); err != nil {
			return err
		}
		// Last, so the project's quota lock is held only to commit.
		return checkQuota(ctx, tx, ns.ProjectID, ns.ID, f.VCPUs, f.RAMMB)
	})
	return out, err
}

// NetworkRequest is one entry of a create request's "networks": a new
// port on a network (optionally with a fixed IP), or an existing port.
type NetworkRequest struct {
	NetworkID string
	FixedIP   string
	PortID    string
	// SecurityGroups are the group ids a new port gets; nil means the
	// project's default group (an existing port keeps its own groups).
	SecurityGroups []string
}

func (nr NetworkRequest) apply(ctx context.Context, tx *sqlx.Tx, projectID, serverID string, slot int) error {
	if nr.PortID != "" {
		return attachPort(ctx, tx, projectID, nr.PortID, serverID, slot)
	}
	_, err := createPort(ctx, tx, Port{ID: uuid.NewString(), NetworkID: nr.NetworkID, ProjectID: projectID,
		ServerID: serverID, DeviceID: serverID, DeviceOwner: "compute:nova", AdminStateUp: true,
		PortSecurityEnabled: true, AutoDelete: true, Slot: slot, SecurityGroups: nr.SecurityGroups}, "", nr.FixedIP)
	return err
}

func specsOf(f *Flavor) []byte {
	if len(f.ExtraSpecs) == 0 {
		return []byte("{}")
	}
	return f.ExtraSpecs
}

func nullable(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// getServer loads a live server (and its ports) visible in scope.
func getServer(ctx context.Context, q sqlx.QueryerContext, sc Scope, id string, forUpdate bool) (*Server, error) {
	notFound := apierr.NotFoundf("Instance %s could not be found.", id)
	if !validUUID(id) {
		return nil, notFound
	}
	query := `SELECT ` + serverCols + ` FROM servers WHERE id = $1 AND deleted_at IS NULL
		AND ($2 OR project_id = $3)`
	if forUpdate {
		query += ` FOR UPDATE`
	}
	var srv Server
	if err := sqlx.GetContext(ctx, q, &srv, query, id, sc.AllProjects, sc.ProjectID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, notFound
		}
		return nil, err
	}
	ports, err := portsOf(ctx, q, []string{id})
	if err != nil {
		return nil, err
	}
	srv.Ports = ports[id]
	groups, err := groupNamesOf(ctx, q, []string{id})
	if err != nil {
		return nil, err
	}
	srv.SecurityGroupNames = groups[id]
	return &srv, nil
}

// FindServer returns a live server visible in scope; NotFound otherwise
// (another project's server is indistinguishable from a missing one).
func (s *Store) FindServer(ctx context.Context, sc Scope, id string) (*Server, error) {
	return getServer(ctx, s.db, sc, id, false)
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// ServerChanges are the fields PUT /servers/{id} may change.
type ServerChanges struct {
	Name        *string
	Description *string
	AccessIPv4  *string
	AccessIPv6  *string
}

// UpdateServer changes a server's name and other descriptive fields.
func (s *Store) UpdateServer(ctx context.Context, sc Scope, id string, ch ServerChanges) (*Server, error) {
	var out *Server
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := getServer(ctx, tx, sc, id, true); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET name = coalesce($2, name),
			description = CASE WHEN $3 THEN $4 ELSE description END,
			access_ipv4 = coalesce($5, access_ipv4), access_ipv6 = coalesce($6, access_ipv6),
			updated_at = now() WHERE id = $1`,
			id, ch.Name, ch.Description != nil, ch.Description, ch.AccessIPv4, ch.AccessIPv6); err != nil {
			return err
		}
		var err error
		out, err = getServer(ctx, tx, sc, id, false)
		return err
	})
	return out, err
}

// SetMetadata replaces (replace=true) or merges a server's metadata, and
// deletes the keys in del; it returns the resulting metadata. maxItems
// is the metadata_items quota.
func (s *Store) SetMetadata(ctx context.Context, sc Scope, id string, set map[string]string, replace bool, del []string, maxItems int) (map[string]string, error) {
	var out map[string]string
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		meta := map[string]string{}
		if !replace {
			_ = json.Unmarshal(srv.Metadata, &meta)
		}
		for k, v := range set {
			meta[k] = v
		}
		for _, k := range del {
			if _, ok := meta[k]; !ok {
				return apierr.NotFoundf("Metadata item was not found")
			}
			delete(meta, k)
		}
		if maxItems >= 0 && len(meta) > maxItems {
			return apierr.OverLimitf("Quota exceeded for metadata_items: Requested %d, but already used 0 of %d metadata_items", len(meta), maxItems)
		}
		b, _ := json.Marshal(meta)
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET metadata = $2, updated_at = now() WHERE id = $1`, id, b); err != nil {
			return err
		}
		out = meta
		return nil
	})
	return out, err
}
