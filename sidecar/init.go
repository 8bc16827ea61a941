package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/redirect"
)

// runInit installs (or with --cleanup removes, or with --dry-run prints) the
// metadata redirect in the current network namespace. Any error makes the
// init container fail, so the pod never starts without its rules.
func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := contract.DefaultInitConfig()
	if help, err := parseFlags("init", args, stderr, cfg.RegisterFlags, func() error { return cfg.Validate() }); help || err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("cmd", "init")
	return redirect.Run(ctx, cfg, redirect.NewSystem(log), stdout, log)
}
