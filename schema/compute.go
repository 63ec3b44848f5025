// Package schema holds the wire types Berth's servers and clients share:
// the Nova-compatible compute API, the Glance-compatible image API, and the
// region ↔ hostagent protocol. It imports only the standard library.
package schema

import (
	"encoding/json"
	"reflect"
)

var reflectString = reflect.TypeOf("")

// Link is an OpenStack resource link.
type Link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
	Type string `json:"type,omitempty"`
}

// Ref is a resource reference with links, as in a server's "image"/"flavor".
type Ref struct {
	ID    string `json:"id"`
	Links []Link `json:"links"`
}

// Flavor is a Nova flavor (GET /flavors/{id}).
type Flavor struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	RAM         int      `json:"ram"`
	VCPUs       int      `json:"vcpus"`
	Disk        int      `json:"disk"`
	Ephemeral   int      `json:"OS-FLV-EXT-DATA:ephemeral"`
	Swap        any      `json:"swap"` // Nova sends "" for 0, else an int
	RxTxFactor  float64  `json:"rxtx_factor"`
	IsPublic    bool     `json:"os-flavor-access:is_public"`
	Disabled    bool     `json:"OS-FLV-DISABLED:disabled"`
	Links       []Link   `json:"links"`
	Description **string `json:"description,omitempty"` // 2.55+, null when unset
	// ExtraSpecs appear in the flavor body from 2.61.
	ExtraSpecs *map[string]string `json:"extra_specs,omitempty"`
}

// FlavorBrief is a flavor in GET /flavors (no detail).
type FlavorBrief struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Links       []Link   `json:"links"`
	Description **string `json:"description,omitempty"` // 2.55+
}

// Address is one entry of a server's "addresses" map.
type Address struct {
	MAC     string `json:"OS-EXT-IPS-MAC:mac_addr"`
	Type    string `json:"OS-EXT-IPS:type"`
	Addr    string `json:"addr"`
	Version int    `json:"version"`
}

// Fault is the fault of a server in ERROR.
type Fault struct {
	Code    int    `json:"code"`
	Created string `json:"created"`
	Message string `json:"message"`
	Details string `json:"details,omitempty"`
}

// SecurityGroupRef names a security group on a server.
type SecurityGroupRef struct {
	Name string `json:"name"`
}

// Server is a Nova server as GET /servers/{id} returns it (microversion 2.1).
// Fields only admins see are pointers, left nil for others.
type Server struct {
	ID             string               `json:"id"`
	Name           string               `json:"name"`
	Status         string               `json:"status"`
	TenantID       string               `json:"tenant_id"`
	UserID         string               `json:"user_id"`
	Metadata       map[string]string    `json:"metadata"`
	HostID         string               `json:"hostId"`
	Image          any                  `json:"image"`  // Ref, or "" when booted from volume
	Flavor         any                  `json:"flavor"` // Ref; EmbeddedFlavor from 2.47
	Created        string               `json:"created"`
	Updated        string               `json:"updated"`
	Addresses      map[string][]Address `json:"addresses"`
	AccessIPv4     string               `json:"accessIPv4"`
	AccessIPv6     string               `json:"accessIPv6"`
	Links          []Link               `json:"links"`
	Progress       int                  `json:"progress"`
	KeyName        *string              `json:"key_name"`
	ConfigDrive    string               `json:"config_drive"`
	SecurityGroups []SecurityGroupRef   `json:"security_groups,omitempty"`
	Fault          *Fault               `json:"fault,omitempty"`

	DiskConfig       string  `json:"OS-DCF:diskConfig"`
	AvailabilityZone string  `json:"OS-EXT-AZ:availability_zone"`
	PowerState       int     `json:"OS-EXT-STS:power_state"`
	TaskState        *string `json:"OS-EXT-STS:task_state"`
	VMState          string  `json:"OS-EXT-STS:vm_state"`
	LaunchedAt       *string `json:"OS-SRV-USG:launched_at"`
	TerminatedAt     *string `json:"OS-SRV-USG:terminated_at"`
	VolumesAttached  []any   `json:"os-extended-volumes:volumes_attached"`

	Host               *string `json:"OS-EXT-SRV-ATTR:host,omitempty"`
	HypervisorHostname *string `json:"OS-EXT-SRV-ATTR:hypervisor_hostname,omitempty"`
	InstanceName       *string `json:"OS-EXT-SRV-ATTR:instance_name,omitempty"`

	// Admin-only extended attributes from microversion 2.3.
	ReservationID  *string `json:"OS-EXT-SRV-ATTR:reservation_id,omitempty"`
	LaunchIndex    *int    `json:"OS-EXT-SRV-ATTR:launch_index,omitempty"`
	Hostname       *string `json:"OS-EXT-SRV-ATTR:hostname,omitempty"`
	KernelID       *string `json:"OS-EXT-SRV-ATTR:kernel_id,omitempty"`
	RamdiskID      *string `json:"OS-EXT-SRV-ATTR:ramdisk_id,omitempty"`
	RootDeviceName *string `json:"OS-EXT-SRV-ATTR:root_device_name,omitempty"`
	UserData       *string `json:"OS-EXT-SRV-ATTR:user_data,omitempty"`

	// Locked is shown from microversion 2.9.
	Locked *bool `json:"locked,omitempty"`

	// HostStatus (2.16, admin): UP, DOWN, MAINTENANCE, UNKNOWN or "".
	HostStatus *string `json:"host_status,omitempty"`
	// Description is shown from 2.19 (null when unset); the pointer to
	// pointer tells "absent" (older versions) from "null".
	Description **string `json:"description,omitempty"`
	// Tags are shown from 2.26.
	Tags *[]string `json:"tags,omitempty"`
	// TrustedCerts are shown (always null in Berth) from 2.63.
	TrustedCerts **[]string `json:"trusted_image_certificates,omitempty"`
}

// EmbeddedFlavor is a server's flavor from microversion 2.47: the flavor
// as the server got it, not a link.
type EmbeddedFlavor struct {
	VCPUs        int               `json:"vcpus"`
	RAM          int               `json:"ram"`
	Disk         int               `json:"disk"`
	Ephemeral    int               `json:"ephemeral"`
	Swap         int               `json:"swap"`
	OriginalName string            `json:"original_name"`
	ExtraSpecs   map[string]string `json:"extra_specs"`
}

// ServerBrief is a server in GET /servers (no detail).
type ServerBrief struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Links []Link `json:"links"`
}

// ServerNetwork is one entry of "networks" in a create request.
type ServerNetwork struct {
	UUID    string `json:"uuid,omitempty"`
	Port    string `json:"port,omitempty"`
	FixedIP string `json:"fixed_ip,omitempty"`
	Tag     string `json:"tag,omitempty"`
}

// ServerCreate is the body of POST /servers ({"server": ServerCreate}).
type ServerCreate struct {
	// Name of the server, 1-255 characters, e.g. "web1".
	Name string `json:"name"`
	// ImageRef is the image UUID (or its URL), e.g. "70a599e0-…".
	ImageRef string `json:"imageRef"`
	// FlavorRef is the flavor id (or its URL), e.g. "1".
	FlavorRef FlexString `json:"flavorRef"`
	// Networks is a list of ServerNetwork, or "auto"/"none" (2.37+).
	Networks         json.RawMessage    `json:"networks,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	KeyName          string             `json:"key_name,omitempty"`
	UserData         string             `json:"user_data,omitempty"`
	AvailabilityZone string             `json:"availability_zone,omitempty"`
	MinCount         *int               `json:"min_count,omitempty"`
	MaxCount         *int               `json:"max_count,omitempty"`
	ReturnResID      bool               `json:"return_reservation_id,omitempty"`
	SecurityGroups   []SecurityGroupRef `json:"security_groups,omitempty"`
	AdminPass        string             `json:"adminPass,omitempty"`
	AccessIPv4       string             `json:"accessIPv4,omitempty"`
	AccessIPv6       string             `json:"accessIPv6,omitempty"`
	ConfigDrive      any                `json:"config_drive,omitempty"`
	DiskConfig       string             `json:"OS-DCF:diskConfig,omitempty"`
	Personality      []Personality      `json:"personality,omitempty"`
	BlockDevices     []map[string]any   `json:"block_device_mapping_v2,omitempty"`
	Description      *string            `json:"description,omitempty"`
	Tags             []string           `json:"tags,omitempty"`
	HostName         string             `json:"hostname,omitempty"`
	TrustedCerts     *[]string          `json:"trusted_image_certificates,omitempty"` // 2.63
}

// Personality is a file injected at boot (deprecated in Nova 2.57).
type Personality struct {
	Path     string `json:"path"`
	Contents string `json:"contents"`
}

// ServerCreated is the 202 body of POST /servers.
type ServerCreated struct {
	ID             string             `json:"id"`
	Links          []Link             `json:"links"`
	DiskConfig     string             `json:"OS-DCF:diskConfig"`
	SecurityGroups []SecurityGroupRef `json:"security_groups"`
	AdminPass      string             `json:"adminPass,omitempty"`
}

// ServerUpdate is the body of PUT /servers/{id}.
type ServerUpdate struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
	AccessIPv4  *string `json:"accessIPv4,omitempty"`
	AccessIPv6  *string `json:"accessIPv6,omitempty"`
	DiskConfig  *string `json:"OS-DCF:diskConfig,omitempty"`
	HostName    *string `json:"hostname,omitempty"`
}

// Version is one API version in version discovery.
type Version struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Version    string `json:"version"`
	MinVersion string `json:"min_version"`
	Updated    string `json:"updated"`
	Links      []Link `json:"links"`
	MediaTypes []struct {
		Base string `json:"base"`
		Type string `json:"type"`
	} `json:"media-types,omitempty"`
}

// FlexString is a JSON value Nova accepts as a string or a number, such as
// flavorRef ("1" or 1); it is kept as its string form.
type FlexString string

// UnmarshalJSON accepts a JSON string or number.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = FlexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflectString}
	}
	*f = FlexString(n.String())
	return nil
}
