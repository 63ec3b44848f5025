package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"

	"berth/hostagent/internal/dockerjson"
)

// pauseInImage is where the pause binary sits inside the pause image.
const pauseInImage = "/pause"

// PauseImageRef is the tag of the pause image built from a pause binary:
// berth/pause:<first 12 hex digits of its sha256>.
func PauseImageRef(binary []byte) string {
	sum := sha256.Sum256(binary)
	return "berth/pause:" + hex.EncodeToString(sum[:])[:12]
}

// ensurePauseImage builds the pause image from the pause binary once, by
// importing a one-file tar. It is never pulled from a registry.
func (d *Docker) ensurePauseImage(ctx context.Context) (string, error) {
	d.pauseMu.Lock()
	defer d.pauseMu.Unlock()
	if d.pauseRef != "" {
		return d.pauseRef, nil
	}
	bin, err := os.ReadFile(d.cfg.PauseBinary)
	if err != nil {
		return "", fmt.Errorf("read pause binary: %w", err)
	}
	ref := PauseImageRef(bin)
	ictx, cancel := d.call(ctx)
	_, err = d.cli.ImageInspect(ictx, ref)
	cancel()
	switch {
	case err == nil:
		d.pauseRef = ref
		return ref, nil
	case !cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect pause image: %w", err)
	}
	layer, err := SingleFileTar(pauseInImage[1:], bin, 0o755)
	if err != nil {
		return "", err
	}
	if err := ImportImage(ctx, d.cli, layer, ref, []string{`ENTRYPOINT ["` + pauseInImage + `"]`}, d.cfg.CallTimeout); err != nil {
		return "", fmt.Errorf("build pause image: %w", err)
	}
	d.log.Info("built pause image", "image", ref)
	d.pauseRef = ref
	return ref, nil
}

// ImageImporter is the part of the Docker client ImportImage needs.
type ImageImporter interface {
	ImageImport(ctx context.Context, source image.ImportSource, ref string, options image.ImportOptions) (io.ReadCloser, error)
}

// ImportImage imports a filesystem tar as image ref with Dockerfile-style
// changes (CMD, ENTRYPOINT, …) and checks the progress stream for errors.
func ImportImage(ctx context.Context, cli ImageImporter, layer []byte, ref string, changes []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(layer), SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	defer rc.Close()
	return dockerjson.CheckProgress(rc)
}

// SingleFileTar returns a tar holding one regular file.
func SingleFileTar(name string, data []byte, mode int64) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
