package hosts

import (
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Host is one registered host.
type Host struct {
	// Name the host's agent registered under, e.g. "node-1".
	Name         string `json:"name"`
	VCPUs        int    `json:"vcpus"`
	VCPUsUsed    int    `json:"vcpus_used"`
	MemoryMB     int    `json:"memory_mb"`
	MemoryMBUsed int    `json:"memory_mb_used"`
	DiskGB       int    `json:"disk_gb"`
	DiskGBUsed   int    `json:"disk_gb_used"`
	// State is "up" or "down" (silent past its grace period).
	State string `json:"state"`
	// HeartbeatAgeSeconds is how long ago the agent last reported.
	HeartbeatAgeSeconds float64 `json:"heartbeat_age_seconds"`
	// Sets is how many sets are placed on the host.
	Sets int `json:"sets"`
}

// GetResult is the result of Get.
type GetResult struct{ gophercloud.Result }

// Extract returns the host. The body may be {"host": …} or, like the list,
// {"hosts": [ … ]} with one entry.
func (r GetResult) Extract() (*Host, error) {
	var s struct {
		Host  *Host  `json:"host"`
		Hosts []Host `json:"hosts"`
	}
	if err := r.ExtractInto(&s); err != nil {
		return nil, err
	}
	if s.Host != nil {
		return s.Host, nil
	}
	if len(s.Hosts) > 0 {
		return &s.Hosts[0], nil
	}
	return &Host{}, nil
}

// HostPage is one page of hosts.
type HostPage struct{ pagination.SinglePageBase }

// IsEmpty says whether the page has no hosts.
func (p HostPage) IsEmpty() (bool, error) {
	h, err := ExtractHosts(p)
	return len(h) == 0, err
}

// ExtractHosts returns the hosts of a page.
func ExtractHosts(p pagination.Page) ([]Host, error) {
	var s struct {
		Hosts []Host `json:"hosts"`
	}
	err := (p.(HostPage)).ExtractInto(&s)
	return s.Hosts, err
}
