// Command mkimage turns files from the host into a one-layer linux/amd64
// container image and writes it as a docker-save tarball with its tag inside,
// ready for `ctr -n k8s.io images import`. The local cluster has no registry
// and no Docker engine; this is how its images are made.
//
//	mkimage -o out.tar -t localhost/x:dev -entrypoint /x -f bin/x:/x -dir rootfs:/ -l /usr/sbin/iptables:xtables-nft-multi
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	out, tag, entrypoint, user, workdir string
	files, dirs, links, envs, cmd       listFlag
}

func main() {
	var o options
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.StringVar(&o.out, "o", "", "output tarball (required)")
	fs.StringVar(&o.tag, "t", "", "image reference written into the tarball, e.g. localhost/app:dev (required)")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "entrypoint, space separated")
	fs.StringVar(&o.user, "user", "", "default user (uid or uid:gid)")
	fs.StringVar(&o.workdir, "workdir", "/", "working directory")
	fs.Var(&o.files, "f", "host file SRC:DST to add (repeatable); mode is kept")
	fs.Var(&o.dirs, "dir", "host directory SRC:DST whose whole tree is added under DST (repeatable)")
	fs.Var(&o.links, "l", "symlink PATH:TARGET (repeatable)")
	fs.Var(&o.envs, "env", "environment variable K=V (repeatable)")
	fs.Var(&o.cmd, "cmd", "default argument (repeatable)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// entry is one file, directory or symlink of the layer.
type entry struct {
	hdr tar.Header
	src string // host file to copy for regular files
}

func run(o options) error {
	if o.out == "" || o.tag == "" {
		return errors.New("-o and -t are required: e.g. -o app.tar -t localhost/app:dev")
	}
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("parse tag %q: %w", o.tag, err)
	}
	entries := map[string]*entry{}
	for _, f := range o.files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("-f %q: want SRC:DST", f)
		}
		if err := addFile(entries, src, dst); err != nil {
			return err
		}
	}
	for _, d := range o.dirs {
		src, dst, ok := strings.Cut(d, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("-dir %q: want SRC:DST", d)
		}
		if err := addDir(entries, src, dst); err != nil {
			return err
		}
	}
	for _, l := range o.links {
		p, target, ok := strings.Cut(l, ":")
		if !ok || p == "" || target == "" {
			return fmt.Errorf("-l %q: want PATH:TARGET", l)
		}
		p = clean(p)
		addParents(entries, p)
		entries[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}}
	}
	layerTar, err := writeTar(entries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("make layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	// empty.Image has no platform; containerd would refuse or mis-pick it.
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = strings.Fields(o.entrypoint)
	cf.Config.Cmd = o.cmd
	cf.Config.User = o.user
	cf.Config.WorkingDir = o.workdir
	cf.Config.Env = o.envs
	if !strings.Contains("\n"+strings.Join(o.envs, "\n"), "\nPATH=") {
		cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, o.envs...)
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func addParents(entries map[string]*entry, p string) {
	for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, ok := entries[d]; !ok {
			entries[d] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}}
		}
	}
}

func addFile(entries map[string]*entry, src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("add %s: not a regular file (use -dir for directories)", src)
	}
	p := clean(dst)
	addParents(entries, p)
	entries[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: int64(st.Mode().Perm()), Size: st.Size()}, src: src}
	return nil
}

// addDir copies a whole tree, keeping symlinks as symlinks (the sidecar's
// rootfs has iptables' multi-call links).
func addDir(entries map[string]*entry, src, dst string) error {
	base := clean(dst)
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := clean(path.Join(base, filepath.ToSlash(rel)))
		if target == "" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		addParents(entries, target)
		switch {
		case d.IsDir():
			entries[target] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: target + "/", Mode: int64(info.Mode().Perm())}}
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("readlink %s: %w", p, err)
			}
			entries[target] = &entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: target, Linkname: l, Mode: 0o777}}
		case info.Mode().IsRegular():
			entries[target] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: target, Mode: int64(info.Mode().Perm()), Size: info.Size()}, src: p}
		default:
			return fmt.Errorf("add %s: unsupported file type %s", p, info.Mode().Type())
		}
		return nil
	})
}

// writeTar writes entries sorted by path with a fixed mtime and root
// ownership, so the same inputs give the same image digest.
func writeTar(entries map[string]*entry) ([]byte, error) {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := entries[n]
		h := e.hdr
		h.ModTime, h.Uid, h.Gid, h.Format = epoch, 0, 0, tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", n, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		f, err := os.Open(e.src)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", e.src, err)
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", e.src, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}
