package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"berth/schema"
)

// Paths of the user data machinery inside an app container.
const (
	userDataDir    = "/var/lib/berth"
	userDataFile   = userDataDir + "/user-data"
	userDataRunner = userDataDir + "/run-user-data"
)

// injected is one file written into a container before its first start.
type injected struct {
	path string
	mode int64
	data []byte
	// dirMode is the mode of a missing parent directory (0: 0755).
	dirMode int64
}

// inject writes the set's authorized keys, personality files and user data
// (with the runner that executes it once) into a created container.
func (d *Docker) inject(ctx context.Context, id string, set schema.DesiredSet) error {
	var files []injected
	if set.AuthorizedKeys != "" {
		keys := set.AuthorizedKeys
		if !strings.HasSuffix(keys, "\n") {
			keys += "\n"
		}
		files = append(files, injected{path: "/root/.ssh/authorized_keys", mode: 0o600, data: []byte(keys), dirMode: 0o700})
	}
	for _, f := range set.Files {
		b, err := base64.StdEncoding.DecodeString(f.Contents)
		if err != nil {
			return fmt.Errorf("file %s: contents are not base64: %w", f.Path, err)
		}
		files = append(files, injected{path: f.Path, mode: 0o644, data: b})
	}
	if set.UserData != "" {
		b, err := base64.StdEncoding.DecodeString(set.UserData)
		if err != nil {
			return fmt.Errorf("user data is not base64: %w", err)
		}
		files = append(files,
			injected{path: userDataFile, mode: 0o700, data: b, dirMode: 0o700},
			injected{path: userDataRunner, mode: 0o700, data: []byte(userDataScript(id)), dirMode: 0o700})
	}
	if len(files) == 0 {
		return nil
	}
	return d.WriteFiles(ctx, id, files...)
}

// userDataScript runs the user data once per container (the marker names
// the container, so a snapshot taken from it runs its user data again),
// with its output on the container's console log.
func userDataScript(id string) string {
	return `#!/bin/sh
# Written by berth: runs the user data once, at the container's first start.
m=` + userDataDir + `/user-data.` + id[:min(12, len(id))] + `.done
[ -e "$m" ] && exit 0
: > "$m" || exit 1
if ( : >/proc/1/fd/1 ) 2>/dev/null; then exec >/proc/1/fd/1 2>&1; fi
echo "berth: running user data"
IFS= read -r first < ` + userDataFile + `
case "$first" in
'#!'*) ` + userDataFile + ` ;;
*) /bin/sh ` + userDataFile + ` ;;
esac
echo "berth: user data exited with status $?"
`
}

// WriteFile writes one file into a container (created or running), making
// missing parent directories (0755). p must be absolute and clean.
func (d *Docker) WriteFile(ctx context.Context, id, p string, mode int64, data []byte) error {
	return d.WriteFiles(ctx, id, injected{path: p, mode: mode, data: data})
}

// WriteFiles writes files through Docker's archive API: one tar extracted
// at "/", holding headers only for parent directories that do not exist
// yet (so existing ones keep their modes). Paths resolve inside the
// container's root (symlinks included).
func (d *Docker) WriteFiles(ctx context.Context, id string, files ...injected) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	made := map[string]bool{}
	for _, f := range files {
		var parents []string
		for dir := path.Dir(f.path); dir != "/"; dir = path.Dir(dir) {
			parents = append([]string{dir}, parents...)
		}
		for _, dir := range parents {
			if made[dir] {
				continue
			}
			made[dir] = true
			exists, err := d.pathExists(ctx, id, dir)
			if err != nil {
				return err
			}
			if exists {
				continue
			}
			mode := int64(0o755)
			if dir == path.Dir(f.path) && f.dirMode != 0 {
				mode = f.dirMode
			}
			if err := tw.WriteHeader(&tar.Header{Name: dir[1:] + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: now}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.path[1:], Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	cctx, cancel := d.call(ctx)
	defer cancel()
	if err := d.cli.CopyToContainer(cctx, id, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("copy files into container %s: %w", id, err)
	}
	return nil
}

func (d *Docker) pathExists(ctx context.Context, id, p string) (bool, error) {
	sctx, cancel := d.call(ctx)
	defer cancel()
	_, err := d.cli.ContainerStatPath(sctx, id, p)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s in container %s: %w", p, id, err)
	}
}

// RunUserData launches the user data runner in a running container,
// detached; it does nothing when the container has no user data or no
// /bin/sh, and the runner itself does nothing after its first run.
func (d *Docker) RunUserData(ctx context.Context, id string) error {
	ok, err := d.pathExists(ctx, id, userDataRunner)
	if err != nil || !ok {
		return err
	}
	if ok, err := d.pathExists(ctx, id, "/bin/sh"); err != nil || !ok {
		if err == nil {
			d.log.Warn("user data not run: the image has no /bin/sh", "container_id", id)
		}
		return err
	}
	ectx, cancel := d.call(ctx)
	defer cancel()
	ex, err := d.cli.ContainerExecCreate(ectx, id, container.ExecOptions{User: "0", Cmd: []string{"/bin/sh", userDataRunner}, Detach: true})
	if err != nil {
		return fmt.Errorf("user data exec in %s: %w", id, err)
	}
	if err := d.cli.ContainerExecStart(ectx, ex.ID, container.ExecStartOptions{Detach: true}); err != nil {
		return fmt.Errorf("user data exec in %s: %w", id, err)
	}
	return nil
}
