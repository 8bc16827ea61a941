package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// runAsSidecarEnv makes the test binary run as podrole-sidecar (its
// arguments are the sidecar's), so that tests can measure the agent as a
// process of its own without building it.
const runAsSidecarEnv = "PODROLE_TEST_RUN_AS_SIDECAR"

func TestMain(m *testing.M) {
	if os.Getenv(runAsSidecarEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}
