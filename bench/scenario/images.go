package scenario

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/docker/docker/api/types/image"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
	"berth/hostagent/images"
	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/wirecount"
	"berth/schema"
)

// Images measures Glance upload and download throughput of a large image
// on loopback against cp of the same file, alternating, several times.
func (e *Env) Images(ctx context.Context) error {
	size, reps := int64(500<<20), 3
	if e.Quick {
		size, reps = 20<<20, 1
	}
	dir := filepath.Join(e.Stack.RunDir(), "bench-images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "image.raw")
	if err := writeRandomFile(src, size); err != nil {
		return err
	}
	mb := float64(size) / (1 << 20)
	var up, down, cpSync, cpPlain []float64
	for i := range reps {
		// Baselines: cp then fsync of the copy (imagesvc fsyncs what it
		// stores), and a plain cp (a downloading client does not fsync).
		dst := filepath.Join(dir, fmt.Sprintf("copy-%d", i))
		t := time.Now()
		if out, err := exec.CommandContext(ctx, "cp", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v: %s", err, out)
		}
		cpPlain = append(cpPlain, mb/time.Since(t).Seconds())
		os.Remove(dst)
		t = time.Now()
		if out, err := exec.CommandContext(ctx, "cp", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v: %s", err, out)
		}
		if out, err := exec.CommandContext(ctx, "sync", dst).CombinedOutput(); err != nil {
			return fmt.Errorf("sync: %v: %s", err, out)
		}
		cpSync = append(cpSync, mb/time.Since(t).Seconds())
		os.Remove(dst)

		id, took, err := e.uploadImage(ctx, src, size, fmt.Sprintf("%simage-%d", e.Prefix, i))
		if err != nil {
			return err
		}
		up = append(up, mb/took.Seconds())
		got := filepath.Join(dir, fmt.Sprintf("download-%d", i))
		took, err = e.downloadImage(ctx, id, got, size)
		if err != nil {
			return err
		}
		down = append(down, mb/took.Seconds())
		os.Remove(got)
		_, _ = e.C.Do(ctx, osapi.Request{Method: http.MethodDelete, URL: e.Stack.ImageURL() + "/v2/images/" + id, Token: e.Demo.Token}, nil)
		e.Log.Info("image sample", "i", i, "upload_mb_s", fmt.Sprintf("%.0f", up[i]), "download_mb_s", fmt.Sprintf("%.0f", down[i]),
			"cp_sync_mb_s", fmt.Sprintf("%.0f", cpSync[i]), "cp_mb_s", fmt.Sprintf("%.0f", cpPlain[i]))
	}
	us, ds, cs, cp := stats.Of(up), stats.Of(down), stats.Of(cpSync), stats.Of(cpPlain)
	r := e.Report
	r.Add(report.Row{ID: "5a", Metric: fmt.Sprintf("image upload (PUT /v2/images/{id}/file, %.0f MB)", mb), Unit: "MB/s", Value: &us,
		Baseline: "cp + sync", BaselineValue: &cs, Ratio: stats.Ratio(us.P50, cs.P50), Note: "ratio is throughput: below 1 is slower"})
	r.Add(report.Row{ID: "5b", Metric: fmt.Sprintf("image download (GET …/file to a file, %.0f MB)", mb), Unit: "MB/s", Value: &ds,
		Baseline: "cp", BaselineValue: &cp, Ratio: stats.Ratio(ds.P50, cp.P50)})
	if err := e.imagePulls(ctx); err != nil {
		return fmt.Errorf("image pulls: %w", err)
	}
	r.Detail("images", map[string]any{"size_mb": mb, "reps": reps, "upload_mb_s": up, "download_mb_s": down,
		"cp_sync_mb_s": cpSync, "cp_mb_s": cpPlain})
	r.Note("Images (5a, 5b): a %.0f MB file of random bytes (so nothing compresses it), uploaded as a bare/raw image by demo "+
		"and downloaded back into a file on the same disk, %d times, alternating with the cp baselines.", mb, reps)
	return nil
}

// imagePulls measures what the host agent's pull path (hostagent/images
// with registry pulls, Docker pulling from imagesvc's registry API) moves:
// a first pull of a base image, then an image on top of that base, each
// counted in bytes on the wire by a forwarding proxy in front of the
// stack's imagesvc, against the layers the host lacked (5c, 5d).
func (e *Env) imagePulls(ctx context.Context) error {
	baseSize, topSize, reps := 64<<20, 16<<20, 3
	if e.Quick {
		baseSize, topSize, reps = 8<<20, 4<<20, 1
	}
	target, err := url.Parse(e.Stack.ImageURL())
	if err != nil {
		return err
	}
	var first, onBase, firstMB, onBaseMB []float64
	for i := range reps {
		// Fresh random layers each time: no engine has them yet.
		base, top := archivetest.RandomLayer(baseSize), archivetest.RandomLayer(topSize)
		baseArc := archivetest.Build(archivetest.Legacy, "bench-pull:base", base)
		appArc := archivetest.Build(archivetest.Legacy, "bench-pull:app", base, top)
		proxy, err := wirecount.NewProxy(target.Host)
		if err != nil {
			return err
		}
		moved, err := e.pullPair(ctx, proxy, i, baseArc, appArc)
		proxy.Close()
		if err != nil {
			return err
		}
		first = append(first, float64(moved[0])/float64(len(base)))
		onBase = append(onBase, float64(moved[1])/float64(len(top)))
		firstMB = append(firstMB, float64(moved[0])/(1<<20))
		onBaseMB = append(onBaseMB, float64(moved[1])/(1<<20))
		e.Log.Info("image pull sample", "i", i, "first_pull_bytes", moved[0], "base_layer_bytes", len(base),
			"pull_on_base_bytes", moved[1], "new_layer_bytes", len(top))
	}
	firstSum, onBaseSum := stats.Of(first), stats.Of(onBase)
	r := e.Report
	r.Add(report.Row{ID: "5c", Metric: fmt.Sprintf("bytes moved pulling an image whose %d MB base the host has (new layer %d MB)",
		baseSize>>20, topSize>>20), Unit: "x", Value: &onBaseSum, Target: "≤ 1.05 × the new layer", Met: report.B(onBaseSum.Max <= 1.05),
		Note: "ratio of bytes on the wire to the new layer's bytes"})
	r.Add(report.Row{ID: "5d", Metric: fmt.Sprintf("bytes moved by a first pull (one %d MB layer)", baseSize>>20), Unit: "x", Value: &firstSum,
		Note: "ratio of bytes on the wire to the layer's bytes"})
	r.Detail("image_pulls", map[string]any{"base_mb": baseSize >> 20, "new_layer_mb": topSize >> 20, "reps": reps,
		"first_pull_ratio": first, "pull_on_base_ratio": onBase, "first_pull_mb": firstMB, "pull_on_base_mb": onBaseMB})
	r.Note("Image pulls (5c, 5d): the host agent's own pull code (hostagent/images, registry pulls) drives the machine's "+
		"Docker engine against the stack's imagesvc through a loopback proxy that counts every byte both ways (manifests, "+
		"configs, auth and HTTP included). Two docker-format Glance images of random (incompressible) layers: a %d MB base, "+
		"then the base plus a %d MB layer; the first pull is the base on a host without it, the second the two-layer image "+
		"right after. %d times with fresh layers.", baseSize>>20, topSize>>20, reps)
	return nil
}

// pullPair uploads two docker images (app on top of base) as demo, has the
// agent's loader pull them in order through proxy, and returns the bytes
// each pull moved. The images leave Glance and Docker afterwards.
func (e *Env) pullPair(ctx context.Context, proxy *wirecount.Proxy, i int, baseArc, appArc archivetest.Archive) ([2]int64, error) {
	var moved [2]int64
	var imgs []schema.SetImage
	defer func() {
		for _, img := range imgs {
			_, _ = e.Docker.ImageRemove(ctx, img.DockerImageID, image.RemoveOptions{Force: true, PruneChildren: true})
			_, _ = e.C.Do(ctx, osapi.Request{Method: http.MethodDelete, URL: e.Stack.ImageURL() + "/v2/images/" + img.ID, Token: e.Demo.Token}, nil)
		}
	}()
	for j, a := range []archivetest.Archive{baseArc, appArc} {
		var img struct {
			ID string `json:"id"`
		}
		if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: e.Stack.ImageURL() + "/v2/images", Token: e.Demo.Token,
			Body: map[string]any{"name": fmt.Sprintf("%spull-%d-%d", e.Prefix, i, j), "container_format": "docker", "disk_format": "raw"},
			OK:   []int{201}}, &img); err != nil {
			return moved, err
		}
		imgs = append(imgs, schema.SetImage{ID: img.ID, DockerImageID: a.ImageID})
		if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPut, URL: e.Stack.ImageURL() + "/v2/images/" + img.ID + "/file",
			Token: e.Demo.Token, Body: bytes.NewReader(a.Data), ContentType: "application/octet-stream",
			ContentLength: int64(len(a.Data)), OK: []int{204}}, nil); err != nil {
			return moved, err
		}
	}
	l := images.New(e.Docker, e.Log, images.Config{ImageURL: "http://" + proxy.Addr, Token: e.Stack.AgentToken(), Registry: true})
	for j, img := range imgs {
		proxy.Wire.Reset()
		if err := l.Ensure(ctx, img); err != nil {
			return moved, err
		}
		moved[j] = proxy.Wire.Total()
	}
	return moved, nil
}

func writeRandomFile(path string, size int64) error {
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for n := int64(0); n < size; n += int64(len(block)) {
		// Vary each block so no layer of the stack can deduplicate them.
		block[0], block[1] = byte(n>>20), byte(n>>28)
		if _, err := f.Write(block[:min(int64(len(block)), size-n)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (e *Env) uploadImage(ctx context.Context, path string, size int64, name string) (string, time.Duration, error) {
	var img struct {
		ID string `json:"id"`
	}
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: e.Stack.ImageURL() + "/v2/images", Token: e.Demo.Token,
		Body: map[string]any{"name": name, "container_format": "bare", "disk_format": "raw"}, OK: []int{201}}, &img); err != nil {
		return "", 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	t := time.Now()
	_, err = e.C.Do(ctx, osapi.Request{Method: http.MethodPut, URL: e.Stack.ImageURL() + "/v2/images/" + img.ID + "/file", Token: e.Demo.Token,
		Body: io.Reader(f), ContentType: "application/octet-stream", ContentLength: size, OK: []int{204}}, nil)
	return img.ID, time.Since(t), err
}

func (e *Env) downloadImage(ctx context.Context, id, path string, size int64) (time.Duration, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	t := time.Now()
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: e.Stack.ImageURL() + "/v2/images/" + id + "/file", Token: e.Demo.Token}, f); err != nil {
		return 0, err
	}
	took := time.Since(t)
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() != size {
		return 0, fmt.Errorf("downloaded %d bytes, want %d", fi.Size(), size)
	}
	return took, nil
}
