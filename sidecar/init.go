package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/envflag"
	"github.com/podrole/podrole/sidecar/redirect"
)

// runInit installs (or with --cleanup removes, or with --dry-run prints) the
// metadata redirect in the current network namespace. Any error makes the
// init container fail, so the pod never starts without its rules.
func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := contract.DefaultInitConfig()
	fs := flag.NewFlagSet("podrole-sidecar init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	if err := envflag.Parse(fs, args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: init takes only flags", fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("cmd", "init")
	return redirect.Run(ctx, cfg, redirect.NewSystem(log), stdout, log)
}
