package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/spf13/cobra"

	sdkimages "berth/client/sdk/images"
	"berth/client/sdk/layers"
)

func (a *app) imageCmd() *cobra.Command {
	return group("image", "Images: upload, list, layers, tree, save, import from Docker …",
		a.imageUploadCmd(), a.imageListCmd(), a.imageShowCmd(), a.imageLayersCmd(), a.imageTreeCmd(),
		a.imageDeleteCmd(), a.imageSaveCmd(), a.imageImportDockerCmd())
}

// imageRecord lays out an image body as python-openstackclient does: the
// base attributes and, under "properties", every extra key.
func imageRecord(body map[string]any) record {
	base := map[string]bool{"checksum": true, "container_format": true, "created_at": true, "disk_format": true,
		"file": true, "id": true, "min_disk": true, "min_ram": true, "name": true, "owner": true, "protected": true,
		"schema": true, "size": true, "status": true, "tags": true, "updated_at": true, "virtual_size": true,
		"visibility": true, "os_hidden": true, "os_hash_algo": true, "os_hash_value": true}
	var rec record
	props := map[string]any{}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := body[k]
		if !base[k] {
			if k != "self" && k != "locations" && k != "direct_url" {
				props[k] = v
			}
			continue
		}
		if k == "tags" {
			if l, ok := v.([]any); ok {
				ss := make([]string, len(l))
				for i, e := range l {
					ss[i] = fmt.Sprint(e)
				}
				v = cell{Raw: v, Text: strings.Join(ss, ", ")}
			}
		}
		rec = append(rec, field{k, v})
	}
	rec = append(rec, field{"properties", cell{Raw: props, Text: text(props)}})
	sort.SliceStable(rec, func(i, j int) bool { return rec[i].Name < rec[j].Name })
	return rec
}

func (a *app) showImage(ctx context.Context, ic *gophercloud.ServiceClient, id string, o *outputOpts) error {
	body, err := objectOf(images.Get(ctx, ic, id).Result, "")
	if err != nil {
		return err
	}
	return o.writeRecord(a.stdout, imageRecord(body))
}

func (a *app) imageShowCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:               "show IMAGE",
		Short:             "Show an image's details",
		Example:           "  berth image show demo\n  berth image show demo -f value -c status",
		Args:              exactArgs(1, "one image (name or ID)"),
		ValidArgsFunction: a.completeImages,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			img, err := findImage(ctx, ic, args[0])
			if err != nil {
				return err
			}
			return a.showImage(ctx, ic, img.ID, &o)
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) imageListCmd() *cobra.Command {
	var o outputOpts
	var long bool
	var name, status, visibility string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List images",
		Example: "  berth image list\n  berth image list --long -f json\n  berth image list -f value -c ID -c Name",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			opts := images.ListOpts{Name: name, Status: images.ImageStatus(status), Visibility: images.ImageVisibility(visibility)}
			pages, err := images.List(ic, opts).AllPages(ctx)
			if err != nil {
				return err
			}
			all, err := images.ExtractImages(pages)
			if err != nil {
				return err
			}
			l := list{Columns: []string{"ID", "Name", "Status"}}
			if long {
				l.Columns = []string{"ID", "Name", "Disk Format", "Container Format", "Size", "Checksum", "Status",
					"Visibility", "Protected", "Project", "Tags"}
			}
			for _, i := range all {
				if !long {
					l.Rows = append(l.Rows, []any{i.ID, i.Name, string(i.Status)})
					continue
				}
				tags := i.Tags
				if tags == nil {
					tags = []string{}
				}
				l.Rows = append(l.Rows, []any{i.ID, i.Name, i.DiskFormat, i.ContainerFormat, i.SizeBytes, i.Checksum,
					string(i.Status), string(i.Visibility), i.Protected, i.Owner, tags})
			}
			return o.writeList(a.stdout, l)
		},
	}
	cmd.Flags().BoolVar(&long, "long", false, "more columns")
	cmd.Flags().StringVar(&name, "name", "", "only images of this name")
	cmd.Flags().StringVar(&status, "status", "", "only images in this status, e.g. active")
	cmd.Flags().StringVar(&visibility, "visibility", "", "public, private, shared or community")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) imageDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete IMAGE [IMAGE…]",
		Aliases:           []string{"rm"},
		Short:             "Delete images (layers still used by other images stay)",
		Example:           "  berth image delete old-web\n  berth image delete img1 img2",
		Args:              minArgs(1, "at least one image (name or ID)"),
		ValidArgsFunction: a.completeImages,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			return a.eachRef(args, func(ref string) error {
				img, err := findImage(ctx, ic, ref)
				if err != nil {
					return err
				}
				return images.Delete(ctx, ic, img.ID).ExtractErr()
			})
		},
	}
	return cmd
}

// uploadOpts are the flags shared by upload and import-docker.
type uploadOpts struct {
	name, containerFormat, diskFormat, visibility string
	props, tags                                   []string
	protected                                     bool
}

func (u *uploadOpts) flags(cmd *cobra.Command, nameRequired bool) {
	f := cmd.Flags()
	if nameRequired {
		f.StringVar(&u.name, "name", "", "image name (required)")
	} else {
		f.StringVar(&u.name, "name", "", "image name (default: the Docker image's name)")
	}
	f.StringVar(&u.containerFormat, "container-format", "docker", "container format (docker: a `docker save` archive)")
	f.StringVar(&u.diskFormat, "disk-format", "raw", "disk format")
	f.StringVar(&u.visibility, "visibility", "", "public, private, shared or community (default private)")
	f.StringArrayVar(&u.props, "property", nil, "property KEY=VALUE (repeatable)")
	f.StringArrayVar(&u.tags, "tag", nil, "tag (repeatable)")
	f.BoolVar(&u.protected, "protected", false, "protect the image from deletion")
}

// upload creates the image record, streams size bytes of r into it with a
// progress bar, and prints the image. A failed upload deletes the record.
func (a *app) upload(ctx context.Context, u *uploadOpts, r io.Reader, size int64, o *outputOpts) error {
	props, err := parseProps("property", u.props)
	if err != nil {
		return err
	}
	ic, err := a.image(ctx)
	if err != nil {
		return err
	}
	create := images.CreateOpts{
		Name: u.name, ContainerFormat: u.containerFormat, DiskFormat: u.diskFormat,
		Tags: u.tags, Properties: props,
	}
	if u.visibility != "" {
		v := images.ImageVisibility(u.visibility)
		create.Visibility = &v
	}
	if u.protected {
		create.Protected = &u.protected
	}
	img, err := images.Create(ctx, ic, create).Extract()
	if err != nil {
		return err
	}
	bar := a.newTransfer(ctx, u.name, size)
	err = sdkimages.Upload(ctx, ic, img.ID, bar.Reader(r), size)
	bar.Done(err == nil)
	if err != nil {
		// Do not leave a queued record behind; the upload's error is the one to report.
		_ = images.Delete(context.WithoutCancel(ctx), ic, img.ID).ExtractErr()
		return err
	}
	return a.showImage(ctx, ic, img.ID, o)
}

func (a *app) imageUploadCmd() *cobra.Command {
	var o outputOpts
	var u uploadOpts
	cmd := &cobra.Command{
		Use:   "upload FILE --name NAME",
		Short: "Upload an image (a `docker save` archive by default); - reads stdin",
		Example: `  docker save busybox:latest -o busybox.tar
  berth image upload --name busybox busybox.tar
  docker save web:v2 | berth image upload --name web-v2 -`,
		Args: exactArgs(1, "one file (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if u.name == "" {
				return usagef("--name is required")
			}
			var r io.Reader = a.stdin
			size := int64(-1)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				if st.IsDir() {
					return fmt.Errorf("%s is a directory", args[0])
				}
				r, size = f, st.Size()
			}
			return a.upload(ctx, &u, r, size, &o)
		},
	}
	u.flags(cmd, true)
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) imageSaveCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "save IMAGE [-o FILE]",
		Short: "Download an image's data (for a docker image: a `docker load`-able archive)",
		Example: `  berth image save demo -o demo.tar
  berth image save demo | docker load`,
		Args:              exactArgs(1, "one image (name or ID)"),
		ValidArgsFunction: a.completeImages,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if out == "" && isTerminal(a.stdout) {
				return usagef("refusing to write image data to a terminal; use -o FILE or a pipe")
			}
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			img, err := findImage(ctx, ic, args[0])
			if err != nil {
				return err
			}
			body, size, err := sdkimages.Download(ctx, ic, img.ID)
			if err != nil {
				return err
			}
			defer body.Close()
			w := a.stdout
			var f *os.File
			if out != "" && out != "-" {
				if f, err = os.Create(out); err != nil {
					return err
				}
				w = f
			}
			bar := a.newTransfer(ctx, img.Name, size)
			n, err := io.Copy(w, bar.Reader(body))
			if err == nil && size >= 0 && n != size {
				err = fmt.Errorf("short download: %d of %d bytes", n, size)
			}
			bar.Done(err == nil)
			if f != nil {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(out)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

func (a *app) imageImportDockerCmd() *cobra.Command {
	var o outputOpts
	var u uploadOpts
	cmd := &cobra.Command{
		Use:   "import-docker DOCKER_IMAGE",
		Short: "Import an image from the local Docker daemon (docker save, streamed into the image service)",
		Example: `  berth image import-docker nginx:1.27 --name nginx
  DOCKER_HOST=unix:///run/docker.sock berth image import-docker busybox:latest`,
		Args: exactArgs(1, "one Docker image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if u.name == "" {
				u.name = args[0]
			}
			rc, err := dockerSave(ctx, a.getenv("DOCKER_HOST"), args[0])
			if err != nil {
				return err
			}
			defer rc.Close()
			return a.upload(ctx, &u, rc, -1, &o)
		},
	}
	u.flags(cmd, false)
	addOutputFlags(cmd, &o, true)
	return cmd
}

// waitImage waits for an image to become active.
func (a *app) waitImage(ctx context.Context, ic *gophercloud.ServiceClient, id, name string) error {
	ctx, cancel := a.waitCtx(ctx)
	defer cancel()
	ui := a.newStatusUI(ctx, name)
	interval := a.env.WaitInterval
	if interval <= 0 {
		interval = time.Second
	}
	for {
		img, err := images.Get(ctx, ic, id).Extract()
		if err != nil {
			ui.Done(false)
			if is404(err) {
				return fmt.Errorf("image %s disappeared (the snapshot failed; see `berth server show` for the fault)", id)
			}
			return err
		}
		ui.Update(string(img.Status), -1)
		switch img.Status {
		case images.ImageStatusActive:
			ui.Done(true)
			return nil
		case images.ImageStatusKilled, images.ImageStatusDeleted:
			ui.Done(false)
			return fmt.Errorf("image %s went to %s", id, img.Status)
		}
		select {
		case <-ctx.Done():
			ui.Done(false)
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// humanSize is a size in binary units, e.g. "1.5 MiB".
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (a *app) imageLayersCmd() *cobra.Command {
	var o outputOpts
	var full bool
	cmd := &cobra.Command{
		Use:   "layers IMAGE",
		Short: "Show an image's layer chain, root first, with sizes and the images sharing each layer",
		Example: `  berth image layers demo
  berth image layers demo -f json`,
		Args:              exactArgs(1, "one image (name or ID)"),
		ValidArgsFunction: a.completeImages,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			img, err := findImage(ctx, ic, args[0])
			if err != nil {
				return err
			}
			ls, err := layers.List(ctx, ic, img.ID).Extract()
			if err != nil {
				return unsupported(err, "layer chains (/v2/images/{id}/layers)")
			}
			names := a.imageNames(ctx, ic)
			l := list{Columns: []string{"#", "Chain ID", "Digest", "Parent", "Size", "Shared By"}}
			var total int64
			for i, ly := range ls {
				total += ly.Size
				chain, digest, parent := short(ly.ChainID), short(ly.Digest), short(ly.Parent)
				if full {
					chain, digest, parent = ly.ChainID, ly.Digest, ly.Parent
				}
				var sharers []string
				for _, id := range ly.SharedBy {
					if id == img.ID {
						continue
					}
					if n := names[id]; n != "" {
						sharers = append(sharers, n)
					} else {
						sharers = append(sharers, id)
					}
				}
				shared := ly.SharedBy
				if shared == nil {
					shared = []string{}
				}
				l.Rows = append(l.Rows, []any{i + 1,
					cell{Raw: ly.ChainID, Text: chain}, cell{Raw: ly.Digest, Text: digest}, cell{Raw: ly.Parent, Text: parent},
					cell{Raw: ly.Size, Text: humanSize(ly.Size)}, cell{Raw: shared, Text: strings.Join(sharers, ", ")}})
			}
			if err := o.writeList(a.stdout, l); err != nil {
				return err
			}
			if o.format == formatTable && len(o.columns) == 0 {
				fmt.Fprintf(a.stdout, "%d layers, %s\n", len(ls), humanSize(total))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&full, "no-trunc", false, "show whole digests")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) imageNames(ctx context.Context, ic *gophercloud.ServiceClient) map[string]string {
	names := map[string]string{}
	pages, err := images.List(ic, images.ListOpts{}).AllPages(ctx)
	if err != nil {
		return names
	}
	all, _ := images.ExtractImages(pages)
	for _, i := range all {
		names[i.ID] = i.Name
	}
	return names
}

// treeNode is one layer in the forest of every image's chain.
type treeNode struct {
	ChainID  string   `json:"chain_id"`
	Digest   string   `json:"digest"`
	Parent   string   `json:"parent"`
	Size     int64    `json:"size"`
	Images   []string `json:"images"`
	children []*treeNode
}

func (a *app) imageTreeCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:   "tree",
		Short: "Show every image's layers as one tree: shared layers appear once, images at the layers they end on",
		Example: `  berth image tree
  berth image tree -f json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			pages, err := images.List(ic, images.ListOpts{}).AllPages(ctx)
			if err != nil {
				return err
			}
			all, err := images.ExtractImages(pages)
			if err != nil {
				return err
			}
			type res struct {
				img images.Image
				ls  []layers.Layer
				err error
			}
			results := make([]res, len(all))
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for i, img := range all {
				if img.Status != images.ImageStatusActive {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					ls, err := layers.List(ctx, ic, img.ID).Extract()
					results[i] = res{img: img, ls: ls, err: err}
				}()
			}
			wg.Wait()
			nodes := map[string]*treeNode{}
			var order []string
			for _, r := range results {
				if r.err != nil {
					if is404(r.err) {
						continue // not a layered image
					}
					return r.err
				}
				for i, ly := range r.ls {
					n := nodes[ly.ChainID]
					if n == nil {
						n = &treeNode{ChainID: ly.ChainID, Digest: ly.Digest, Parent: ly.Parent, Size: ly.Size, Images: []string{}}
						nodes[ly.ChainID] = n
						order = append(order, ly.ChainID)
					}
					if i == len(r.ls)-1 {
						label := r.img.Name
						if label == "" {
							label = r.img.ID
						}
						n.Images = append(n.Images, label)
					}
				}
			}
			var roots []*treeNode
			for _, id := range order {
				n := nodes[id]
				if p := nodes[n.Parent]; p != nil && n.Parent != "" {
					p.children = append(p.children, n)
				} else {
					roots = append(roots, n)
				}
			}
			if o.format != formatTable {
				l := list{Columns: []string{"Chain ID", "Parent", "Digest", "Size", "Images"}}
				for _, id := range order {
					n := nodes[id]
					sort.Strings(n.Images)
					l.Rows = append(l.Rows, []any{n.ChainID, n.Parent, n.Digest, n.Size, n.Images})
				}
				return o.writeList(a.stdout, l)
			}
			var b strings.Builder
			var walk func(n *treeNode, prefix string, last, root bool)
			walk = func(n *treeNode, prefix string, last, root bool) {
				branch, next := "├── ", prefix+"│   "
				if last {
					branch, next = "└── ", prefix+"    "
				}
				if root {
					branch, next = "", ""
				}
				sort.Strings(n.Images)
				fmt.Fprintf(&b, "%s%s%s %s", prefix, branch, short(n.ChainID), humanSize(n.Size))
				if len(n.Images) > 0 {
					fmt.Fprintf(&b, "  ← %s", strings.Join(n.Images, ", "))
				}
				b.WriteByte('\n')
				for i, c := range n.children {
					walk(c, next, i == len(n.children)-1, false)
				}
			}
			for _, r := range roots {
				walk(r, "", true, true)
			}
			_, err = io.WriteString(a.stdout, b.String())
			return err
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}
