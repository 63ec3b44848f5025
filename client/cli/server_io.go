package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"berth/client/sdk/console"
	"berth/client/sdk/fault"
	"berth/client/sdk/servers"
)

func (a *app) serverConsoleCmd() *cobra.Command {
	var lines int
	var url bool
	cmd := &cobra.Command{
		Use:   "console SERVER",
		Short: "Print a server's console output (its app container's log), or its serial console URL",
		Example: `  berth server console web1
  berth server console --lines 20 web1
  berth server console --url web1`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: a.onServer(func(ctx context.Context, compute *gophercloud.ServiceClient, id string) error {
			if url {
				c, err := servers.SerialConsole(ctx, compute, id).Extract()
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, c.URL)
				return nil
			}
			out, err := servers.ConsoleOutput(ctx, compute, id, lines).Extract()
			if err != nil {
				return err
			}
			_, err = io.WriteString(a.stdout, out)
			if err == nil && out != "" && !strings.HasSuffix(out, "\n") {
				fmt.Fprintln(a.stdout)
			}
			return err
		}),
	}
	cmd.Flags().IntVar(&lines, "lines", 0, "only the last N lines")
	cmd.Flags().BoolVar(&url, "url", false, "print the serial console's websocket URL instead")
	return cmd
}

func (a *app) serverLogsCmd() *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs SERVER",
		Short: "Print (or follow) the log of a server's app container",
		Example: `  berth server logs web1
  berth server logs -f --tail 50 web1`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: a.onServer(func(ctx context.Context, compute *gophercloud.ServiceClient, id string) error {
			rc, err := servers.Logs(ctx, compute, id, servers.LogsOpts{Tail: tail, Follow: follow})
			if err != nil && follow && ctx.Err() != nil {
				return nil // Ctrl-C before the first line arrived
			}
			if err != nil {
				if fault.StatusOf(err) == http.StatusNotFound && strings.Contains(message(err), "resource could not be found") {
					return unsupported(err, "log streaming (/servers/{id}/berth-logs)")
				}
				return err
			}
			defer rc.Close()
			_, err = io.Copy(a.stdout, rc)
			if follow && ctx.Err() != nil {
				return nil // Ctrl-C ends a follow; that is success
			}
			return err
		}),
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	cmd.Flags().IntVar(&tail, "tail", 0, "start with the last N lines (default all)")
	return cmd
}

func (a *app) serverShellCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shell SERVER",
		Short: "Open an interactive shell in a server's app container (serial console over a websocket)",
		Long: `Open an interactive shell in a server's app container, through the
serial console the compute API hands out (os-getSerialConsole). On a
terminal the session is raw and follows window resizes; Ctrl-] detaches.
With stdin piped, the input is sent and the shell gets Ctrl-D at its end.`,
		Example: `  berth server shell web1
  echo 'cat /etc/hostname' | berth server shell web1`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			srv, err := findServer(ctx, compute, args[0])
			if err != nil {
				return err
			}
			c, err := servers.SerialConsole(ctx, compute, srv.ID).Extract()
			if err != nil {
				return err
			}
			opts := console.AttachOpts{Stdin: a.stdin, Stdout: a.stdout, HTTPClient: &a.sess.Provider.HTTPClient}
			if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				fd := int(f.Fd())
				old, err := term.MakeRaw(fd)
				if err != nil {
					return err
				}
				defer term.Restore(fd, old)
				fmt.Fprintf(a.stderr, "Connected to %s. Ctrl-] detaches.\r\n", srv.Name)
				opts.DetachKey = console.DetachKey
				resize := make(chan console.Size, 1)
				send := func() {
					if w, h, err := term.GetSize(fd); err == nil {
						select {
						case resize <- console.Size{Cols: w, Rows: h}:
						default:
						}
					}
				}
				send()
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer signal.Stop(winch)
				go func() {
					for range winch {
						send()
					}
				}()
				opts.Resize = resize
			} else {
				opts.SendOnEOF = []byte{0x04}
			}
			err = console.Attach(ctx, c.URL, opts)
			if errors.Is(err, console.ErrDetached) {
				fmt.Fprintf(a.stderr, "\r\nDetached from %s.\r\n", srv.Name)
				return nil
			}
			var de *console.DialError
			if errors.As(err, &de) {
				return fmt.Errorf("the console refused the connection (HTTP %d): %w", de.Status, de.Err)
			}
			return err
		},
	}
	return cmd
}

// remotePath splits "SERVER:/path"; ok is false for a local path.
func remotePath(s string) (server, p string, ok bool) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || s == "-" {
		return "", "", false
	}
	server, p, ok = strings.Cut(s, ":")
	if !ok || server == "" || strings.Contains(server, "/") || !strings.HasPrefix(p, "/") {
		return "", "", false
	}
	return server, p, true
}

func (a *app) serverCpCmd() *cobra.Command {
	var mode string
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file to or from a server's app container (at most 16 MiB)",
		Long: `Copy one file between this machine and a server's app container, over the
compute API's file actions. One side is SERVER:/absolute/path, the other a
local path ("-" is stdin or stdout). A remote path ending in "/" or a
local directory gets the source's base name.`,
		Example: `  berth server cp ./index.html web1:/www/index.html
  berth server cp web1:/etc/hostname .
  berth server cp web1:/var/log/app.log - | grep ERROR`,
		Args: exactArgs(2, "SRC and DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			srcSrv, srcPath, srcRemote := remotePath(args[0])
			dstSrv, dstPath, dstRemote := remotePath(args[1])
			if srcRemote == dstRemote {
				return usagef("exactly one of SRC and DST must be SERVER:/path")
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			if dstRemote {
				id, err := serverID(ctx, compute, dstSrv)
				if err != nil {
					return err
				}
				data, perm, err := a.readLocal(args[0])
				if err != nil {
					return err
				}
				if strings.HasSuffix(dstPath, "/") {
					if args[0] == "-" {
						return usagef("copying stdin needs a file name in DST")
					}
					dstPath += filepath.Base(args[0])
				}
				m := mode
				if m == "" && perm != 0 {
					m = fmt.Sprintf("%04o", perm)
				}
				return servers.PutFile(ctx, compute, id, servers.PutFileOpts{Path: dstPath, Contents: data, Mode: m}).ExtractErr()
			}
			id, err := serverID(ctx, compute, srcSrv)
			if err != nil {
				return err
			}
			data, err := servers.GetFile(ctx, compute, id, srcPath).Extract()
			if err != nil {
				return err
			}
			dst := args[1]
			if dst == "-" {
				_, err = a.stdout.Write(data)
				return err
			}
			if st, err := os.Stat(dst); err == nil && st.IsDir() {
				dst = filepath.Join(dst, path.Base(srcPath))
			}
			return os.WriteFile(dst, data, 0o644)
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "octal mode of the copied file in the server (default: the local file's)")
	return cmd
}

func (a *app) readLocal(p string) ([]byte, os.FileMode, error) {
	if p == "-" {
		data, err := io.ReadAll(io.LimitReader(a.stdin, servers.MaxFileSize+1))
		if err != nil {
			return nil, 0, err
		}
		if len(data) > servers.MaxFileSize {
			return nil, 0, fmt.Errorf("stdin is larger than 16 MiB, the most cp moves")
		}
		return data, 0, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, 0, err
	}
	if st.IsDir() {
		return nil, 0, fmt.Errorf("%s is a directory; cp moves one file", p)
	}
	if st.Size() > servers.MaxFileSize {
		return nil, 0, fmt.Errorf("%s is %d bytes; cp moves at most 16 MiB", p, st.Size())
	}
	data, err := os.ReadFile(p)
	return data, st.Mode().Perm(), err
}
