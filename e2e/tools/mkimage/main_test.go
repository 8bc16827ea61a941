package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image containerd imports must carry the platform, the entrypoint and
// user, every file with its mode, directory trees and symlinks as given.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"usr/sbin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/protocols"), []byte("tcp 6 TCP\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/sbin", filepath.Join(root, "sbin")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	o := options{out: out, tag: "localhost/x:dev", entrypoint: "/bin/prog serve", user: "65532:65532", workdir: "/"}
	o.files = listFlag{bin + ":/bin/prog"}
	o.dirs = listFlag{root + ":/"}
	o.links = listFlag{"/usr/sbin/iptables:xtables-nft-multi"}
	o.envs = listFlag{"A=b"}
	if err := run(o); err != nil {
		t.Fatal(err)
	}

	tag, _ := name.NewTag("localhost/x:dev")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/bin/prog", "serve"}) || cf.Config.User != "65532:65532" {
		t.Errorf("entrypoint %v user %q", cf.Config.Entrypoint, cf.Config.User)
	}
	if !strings.Contains(strings.Join(cf.Config.Env, " "), "A=b") {
		t.Errorf("env %v lacks A=b", cf.Config.Env)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %d", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		v := string(rune(h.Typeflag)) + " " + os.FileMode(h.Mode).Perm().String()
		if h.Typeflag == tar.TypeSymlink {
			v += " -> " + h.Linkname
		}
		got[h.Name] = v
	}
	want := map[string]string{
		"bin/":              "5 -rwxr-xr-x",
		"bin/prog":          "0 -rwxr-xr-x",
		"etc/":              "5 -rwxr-xr-x",
		"etc/protocols":     "0 -rw-r--r--",
		"sbin":              "2 -rwxrwxrwx -> usr/sbin",
		"usr/":              "5 -rwxr-xr-x",
		"usr/sbin/":         "5 -rwxr-xr-x",
		"usr/sbin/iptables": "2 -rwxrwxrwx -> xtables-nft-multi",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer entries:\n got %v\nwant %v", got, want)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]options{
		"no output":     {tag: "localhost/x:dev"},
		"bad tag":       {out: filepath.Join(dir, "a.tar"), tag: "Not A Tag"},
		"missing file":  {out: filepath.Join(dir, "b.tar"), tag: "localhost/x:dev", files: listFlag{dir + "/nope:/x"}},
		"file no colon": {out: filepath.Join(dir, "c.tar"), tag: "localhost/x:dev", files: listFlag{"/etc/hostname"}},
	} {
		if err := run(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
