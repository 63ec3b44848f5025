package compute

import (
	"context"
	"encoding/json"
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

// hostStatusOf returns Nova's host_status of a server on a host: "" with
// no host, MAINTENANCE when the host's service is disabled, UP or DOWN
// from its heartbeats (and forced-down), UNKNOWN when the host is not
// known. The hosts are read (at most once a second) before it returns,
// so the function it returns does no I/O: a list may call it while it
// holds a database connection.
func (a *API) hostStatusOf(ctx context.Context) func(host string) string {
	c := &a.hosts
	c.mu.Lock()
	defer c.mu.Unlock()
	byHost := c.byHost
	if byHost == nil || time.Since(c.at) > time.Second {
		byHost = nil // every host UNKNOWN if they cannot be read
		if hs, err := a.cfg.Store.ListHosts(ctx); err != nil {
			a.log.Warn("host status", "err", err)
		} else {
			// A new map each time: one handed out is never written again.
			byHost = make(map[string]string, len(hs))
			for i := range hs {
				st := "DOWN"
				switch {
				case hs[i].Disabled:
					st = "MAINTENANCE"
				case a.hostUp(&hs[i]):
					st = "UP"
				}
				byHost[hs[i].Name] = st
			}
			c.byHost, c.at = byHost, time.Now()
		}
	}
	return func(host string) string {
		if host == "" {
			return ""
		}
		if st, ok := byHost[host]; ok {
			return st
		}
		return "UNKNOWN"
	}
}

// laterViewFields adds the server fields of microversions 2.16 and up.
func laterViewFields(o viewOpts, s *store.Server, v *schema.Server) {
	mv := o.mv
	if o.showsHostStatus() {
		st := o.hostStatus
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
