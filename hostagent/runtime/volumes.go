package runtime

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"berth/hostagent/observed"
	"berth/schema"
)

// VolumeName is the Docker volume of a set volume on a host.
func VolumeName(host, setID, vol string) string {
	return "berth-" + sanitizeName(host) + "-" + sanitizeName(setID) + "-" + sanitizeName(vol)
}

// EnsureVolume creates a set volume (local driver, no options: never a
// host path) unless it exists. An existing volume of that name that is
// not ours is an error.
func (d *Docker) EnsureVolume(ctx context.Context, set schema.DesiredSet, vol string) (bool, error) {
	name := VolumeName(d.cfg.Host, set.ID, vol)
	ictx, cancel := d.call(ctx)
	defer cancel()
	v, err := d.cli.VolumeInspect(ictx, name)
	switch {
	case err == nil:
		if v.Labels[LabelManaged] != "true" || v.Labels[LabelHost] != d.cfg.Host || v.Labels[LabelSet] != set.ID {
			return false, fmt.Errorf("volume %s: %w", name, ErrNotManaged)
		}
		return false, nil
	case !cerrdefs.IsNotFound(err):
		return false, fmt.Errorf("inspect volume %s: %w", name, err)
	}
	_, err = d.cli.VolumeCreate(ictx, volume.CreateOptions{Name: name, Driver: "local", Labels: map[string]string{
		LabelManaged: "true", LabelHost: d.cfg.Host, LabelSet: set.ID, LabelVolume: vol,
	}})
	if err != nil {
		return false, fmt.Errorf("create volume %s: %w", name, err)
	}
	return true, nil
}

// ListVolumes returns this host's set volumes, of one set or all.
func (d *Docker) ListVolumes(ctx context.Context, setID string) ([]observed.Volume, error) {
	f := filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelHost+"="+d.cfg.Host),
	)
	if setID != "" {
		f.Add("label", LabelSet+"="+setID)
	}
	lctx, cancel := d.call(ctx)
	defer cancel()
	resp, err := d.cli.VolumeList(lctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]observed.Volume, 0, len(resp.Volumes))
	for _, v := range resp.Volumes {
		out = append(out, observed.Volume{Name: v.Name, SetID: v.Labels[LabelSet], Volume: v.Labels[LabelVolume]})
	}
	return out, nil
}

// RemoveVolume removes a set volume; a missing one is removed.
func (d *Docker) RemoveVolume(ctx context.Context, name string) error {
	rctx, cancel := d.call(ctx)
	defer cancel()
	if err := d.cli.VolumeRemove(rctx, name, false); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}
