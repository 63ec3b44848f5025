package sets

import (
	"encoding/json"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// ContainerStatus is a container of a set as the API shows it: what was
// asked for plus what the host observed.
type ContainerStatus struct {
	Container
	// State as observed, e.g. "running", "exited".
	State string `json:"state,omitempty"`
	// RestartCount as observed.
	RestartCount int `json:"restart_count,omitempty"`
	// ImageID is the resolved image id.
	ImageID string `json:"image_id,omitempty"`
}

// Set is a set as the API returns it. Fields the SDK does not know yet are
// kept in Extra, so nothing the server says is lost.
type Set struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Status     string            `json:"status,omitempty"`
	FlavorRef  string            `json:"flavorRef,omitempty"`
	Host       string            `json:"host,omitempty"`
	ProjectID  string            `json:"project_id,omitempty"`
	Networks   []Network         `json:"networks,omitempty"`
	Containers []ContainerStatus `json:"containers"`
	Created    string            `json:"created,omitempty"`
	Updated    string            `json:"updated,omitempty"`
	// Extra holds every other key of the body.
	Extra map[string]any `json:"-"`
}

// UnmarshalJSON keeps unknown keys in Extra.
func (s *Set) UnmarshalJSON(b []byte) error {
	type plain Set
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for _, k := range []string{"id", "name", "status", "flavorRef", "host", "project_id", "networks", "containers", "created", "updated"} {
		delete(all, k)
	}
	*s = Set(p)
	if len(all) > 0 {
		s.Extra = all
	}
	return nil
}

type commonResult struct {
	gophercloud.Result
}

// Extract returns the set.
func (r commonResult) Extract() (*Set, error) {
	var s struct {
		Set Set `json:"set"`
	}
	err := r.ExtractInto(&s)
	return &s.Set, err
}

// CreateResult is the result of Create.
type CreateResult struct{ commonResult }

// GetResult is the result of Get.
type GetResult struct{ commonResult }

// DeleteResult is the result of Delete; call ExtractErr.
type DeleteResult struct{ gophercloud.ErrResult }

// SetPage is one page of sets.
type SetPage struct {
	pagination.SinglePageBase
}

// IsEmpty says whether the page has no sets.
func (p SetPage) IsEmpty() (bool, error) {
	if p.StatusCode == 204 {
		return true, nil
	}
	s, err := ExtractSets(p)
	return len(s) == 0, err
}

// ExtractSets returns the sets of a page.
func ExtractSets(p pagination.Page) ([]Set, error) {
	var s struct {
		Sets []Set `json:"sets"`
	}
	err := (p.(SetPage)).ExtractInto(&s)
	return s.Sets, err
}
