// Command podrole-bench prints podrole's speed and footprint figures, each
// beside a reference measured in the same run, with the target next to it.
//
//	make bench                      # everything that exists on this machine
//	podrole-bench --only=imds,first # some sections
//
// Servers are pinned to CPU 0 and this process (the load generator) to CPU 1,
// so a figure is the server's, not the client's. All traffic is loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podrole/podrole/bench"
)

type options struct {
	only     map[string]bool
	duration time.Duration
	sidecar  string
	mock     string
	work     string
	images   string
	stsConf  string
}

func main() {
	// Pin the load generator to CPU 1 by re-executing under taskset once.
	reference := len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "serve-")
	if os.Getenv("PODROLE_BENCH_PINNED") == "" && !reference {
		self, err := os.Executable()
		if err == nil {
			if ts, err := exec.LookPath("taskset"); err == nil {
				env := append(os.Environ(), "PODROLE_BENCH_PINNED=1")
				err = syscall.Exec(ts, append([]string{"taskset", "-c", "1", self}, os.Args[1:]...), env)
				log.Printf("podrole-bench: could not pin to CPU 1 (%v); running unpinned", err)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if reference {
		if err := serveReference(ctx, os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "podrole-bench %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "podrole-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	cache := os.Getenv("PODROLE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "podrole")
	}
	fs := flag.NewFlagSet("podrole-bench", flag.ContinueOnError)
	only := fs.String("only", "imds,first,sts,footprint,health", "sections to run (comma-separated); the webhook and pod start-up sections are go tests run by scripts/bench.sh")
	var o options
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measuring time per load point")
	fs.StringVar(&o.sidecar, "sidecar", "bin/podrole-sidecar", "podrole-sidecar binary")
	fs.StringVar(&o.mock, "mock", filepath.Join(cache, "bin", "ec2-metadata-mock"), "amazon-ec2-metadata-mock binary (reference)")
	fs.StringVar(&o.images, "images", filepath.Join(envOr("PODROLE_WORK", "/var/tmp/podrole-cluster"), "images"), "folder of image tarballs from make images")
	fs.StringVar(&o.stsConf, "sts-config", "stsdouble/testdata/config.json", "STS double configuration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		o.only[strings.TrimSpace(s)] = true
	}
	work, err := os.MkdirTemp("", "podrole-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.work = work
	fmt.Fprintf(out, "podrole-bench %s — servers on CPU 0, load generator on CPU 1, loopback only\n\n", time.Now().UTC().Format(time.RFC3339))
	sections := []struct {
		name string
		fn   func(context.Context, options, io.Writer) error
	}{
		{"imds", benchIMDS},
		{"first", benchFirstCredentials},
		{"sts", benchSTSEconomy},
		{"footprint", benchFootprint},
		{"health", benchHealthPort},
	}
	var failed []string
	for _, s := range sections {
		if !o.only[s.name] {
			continue
		}
		if err := s.fn(ctx, o, out); err != nil {
			fmt.Fprintf(out, "section %s failed: %v\n\n", s.name, err)
			failed = append(failed, s.name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("sections failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// serveReference runs one of the reference servers in this binary, so that it
// can be pinned and measured as a process of its own like the real ones.
func serveReference(ctx context.Context, which string, args []string) error {
	fs := flag.NewFlagSet(which, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var h http.Handler
	switch which {
	case "serve-trivial-imds":
		h = bench.TrivialIMDS()
	default:
		return fmt.Errorf("unknown reference %q", which)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err = srv.Serve(ln); errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
