// Command sts-double serves the stsdouble fake AWS STS (Query API on "/",
// test knobs under /_double/) for the e2e cluster, the demo and benchmarks.
//
//	sts-double --listen=127.0.0.1:8500 --config=stsdouble/testdata/config.json
//
// It prints "sts-double ready on http://ADDR" once it accepts connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/podrole/podrole/stsdouble"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sts-double: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sts-double", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8500", "host:port to serve STS and /_double/ on")
	config := fs.String("config", "", "JSON config: account, keys, roles with trust, oidc_providers (see stsdouble/README.md)")
	quiet := fs.Bool("quiet", false, "log only failed calls")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *config == "" {
		return errors.New("--config is required: give a JSON file like stsdouble/testdata/config.json")
	}
	cfg, err := stsdouble.LoadConfig(*config)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := stsdouble.New(cfg, stsdouble.Options{Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "sts-double ready on http://%s (account %s, %d roles)\n", ln.Addr(), cfg.Account, len(cfg.Roles))
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
