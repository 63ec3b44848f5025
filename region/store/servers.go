package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/region/novastate"
	"berth/region/scheduler"
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
// created, in ERROR with Nova's "No valid host" fault, as Nova does. A
// create whose RetryKey names a live server made within CreateRetryWindow
// returns that server instead.
//
// Concurrent creates share that transaction: the request is queued and
// committed with the others that arrived with it (see PlacementBatch and
// createBatch), each with its own result, as if they had run one after
// another. Errors: Conflict (the id exists, a port is in use), NotFound
// (the group), OverLimit (quota), Invalid; Unavailable when the store is
// closing.
func (s *Store) CreateServer(ctx context.Context, ns NewServer, candidates []string, grace time.Duration, noHostReason string) (*Server, error) {
	return s.batcher.submit(ctx, &createReq{ctx: ctx, ns: ns, candidates: candidates, grace: grace,
		noHostReason: noHostReason, done: make(chan createResult, 1)})
}

// PlaceServer ranks the hosts for r and creates the server on the first
// with room: RankHosts and CreateServer in one, as region's create
// handler needs them, but cheaper at scale. It ranks only the first
// scheduler.Best candidates, walking region's host view in weight order
// (at 10,000 hosts a full Rank was ~0.5-0.9 ms of region CPU per create,
// under the view's lock); only if the batch finds every one of them
// taken does it rank the rest. Errors are CreateServer's.
func (s *Store) PlaceServer(ctx context.Context, ns NewServer, r scheduler.Request) (*Server, error) {
	names, reason, complete, err := s.rankFirst(ctx, r)
	if err != nil {
		return nil, err
	}
	req := &createReq{ctx: ctx, ns: ns, candidates: names, grace: r.Grace, noHostReason: reason,
		done: make(chan createResult, 1)}
	if !complete {
		req.rest = func(ctx context.Context) ([]string, string, error) { return s.rankAll(ctx, r) }
	}
	return s.batcher.submit(ctx, req)
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
