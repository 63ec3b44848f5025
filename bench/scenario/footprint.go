package scenario

import (
	"context"
	"fmt"
	"strings"

	"berth/bench/report"
	"berth/internal/devstack"
)

// FootprintIdle reads the resident memory of the idle control plane:
// region, imagesvc and hostagent just after the warm-up (one server booted
// and deleted), from /proc/PID/status.
func (e *Env) FootprintIdle(ctx context.Context) error {
	var total float64
	var parts []string
	each := map[string]float64{}
	for _, name := range []string{devstack.ServiceRegion, devstack.ServiceImage, devstack.ServiceHostAgent} {
		rss, err := e.ServiceRSS(name)
		if err != nil {
			return err
		}
		total += rss
		each[name] = rss
		parts = append(parts, fmt.Sprintf("%s %.1f MB", name, rss))
	}
	if rss, err := e.ServiceRSS(devstack.ServiceKeystone); err == nil {
		each["keystone (uwsgi master, not Berth)"] = rss
	}
	e.Report.Add(report.Row{ID: "7a", Metric: "RSS of the idle control plane (region + imagesvc + hostagent)", Unit: "MB",
		Single: report.F(total), Target: "≤ 200 MB", Met: report.B(total <= 200), Note: strings.Join(parts, ", ")})
	e.Report.Detail("footprint_idle_mb", each)
	return nil
}
