package compute

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"berth/region/store"
	"berth/schema"
)

// hostStatuses caches each host's Nova host_status (2.16) for a second,
// so a detailed list of many servers reads the hosts table once.
type hostStatuses struct {
	mu     sync.Mutex
	at     time.Time
	byHost map[string]string
}

// hostStatus is Nova's host_status of a server on host: "" with no host,
// MAINTENANCE when the host's service is disabled, UP or DOWN from its
// heartbeats (and forced-down), UNKNOWN when the host is not known.
func (a *API) hostStatus(ctx context.Context, host string) string {
	if host == "" {
		return ""
	}
	c := &a.hosts
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byHost == nil || time.Since(c.at) > time.Second {
		hs, err := a.cfg.Store.ListHosts(ctx)
		if err != nil {
			a.log.Warn("host status", "err", err)
			return "UNKNOWN"
		}
		c.byHost = make(map[string]string, len(hs))
		for i := range hs {
			st := "DOWN"
			switch {
			case hs[i].Disabled:
				st = "MAINTENANCE"
			case a.hostUp(&hs[i]):
				st = "UP"
			}
			c.byHost[hs[i].Name] = st
		}
		c.at = time.Now()
	}
	if st, ok := c.byHost[host]; ok {
		return st
	}
	return "UNKNOWN"
}

// laterViewFields adds the server fields of microversions 2.16 and up.
func (a *API) laterViewFields(r *http.Request, s *store.Server, v *schema.Server) {
	mv := versionOf(r.Context())
	if mv.AtLeast(Microversion{2, 16}) && identity(r.Context()).IsAdmin() {
		st := a.hostStatus(r.Context(), s.Host.String)
		v.HostStatus = &st
	}
	if mv.AtLeast(Microversion{2, 19}) {
		d := s.Description
		v.Description = &d
	}
	if mv.AtLeast(Microversion{2, 26}) {
		tags := []string(s.Tags)
		if tags == nil {
			tags = []string{}
		}
		v.Tags = &tags
	}
	if mv.AtLeast(Microversion{2, 63}) {
		var none *[]string
		v.TrustedCerts = &none
	}
	if mv.AtLeast(Microversion{2, 47}) {
		specs := map[string]string{}
		_ = json.Unmarshal(s.ExtraSpecs, &specs)
		v.Flavor = schema.EmbeddedFlavor{VCPUs: s.VCPUs, RAM: s.RAMMB, Disk: s.DiskGB,
			Ephemeral: s.FlavorEphemeralGB, Swap: s.FlavorSwapMB, OriginalName: s.FlavorName, ExtraSpecs: specs}
	}
}
