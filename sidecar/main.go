// Command podrole-sidecar is the per-pod agent: `init` installs the metadata
// redirect in the pod's network namespace and exits; `serve` emulates the
// instance metadata credentials API for the pod's one role.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/envflag"
)

// usage names the defaults the image must agree with: scripts/sidecar-rootfs.sh
// reads the agent's UID from the "agent UID" line, so image and binary
// cannot drift apart.
var usage = fmt.Sprintf(`usage: podrole-sidecar <command> [flags]

commands:
  init    redirect (or, with --block, reject) metadata traffic in this network namespace
  serve   serve the instance metadata credentials API for one role
  wait    wait until the agent reports started (legacy sidecar mode's postStart hook)

Every flag can also come from the environment as PODROLE_<NAME> (--role-arn: PODROLE_ROLE_ARN),
unless --ignore-env is given (podrole's webhook always gives it).
Run "podrole-sidecar <command> -h" for its flags.

Defaults: agent UID %d, agent port %d, health port %d, agent socket mark %s.
`, contract.DefaultSidecarUID, contract.DefaultSidecarPort, contract.DefaultHealthPort, contract.FormatMark(contract.DefaultAgentMark))

func main() {
	// First, before any flag, file or credential is read: see noDump.
	if err := noDump(); err != nil {
		fmt.Fprintf(os.Stderr, "podrole-sidecar: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = runInit(ctx, args[1:], stdout, stderr)
	case "serve":
		applyServeGCPercent(os.LookupEnv)
		err = runServe(ctx, args[1:], stdout, stderr)
	case "wait":
		err = runWait(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "podrole-sidecar: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "podrole-sidecar %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// parseFlags parses a subcommand's flags, each also read from PODROLE_<NAME>,
// into the config that register binds, refuses positional arguments, and
// validates. help is true when -h printed the usage: the command then exits 0.
func parseFlags(name string, args []string, stderr io.Writer, register func(*flag.FlagSet), validate func() error) (help bool, err error) {
	fs := flag.NewFlagSet("podrole-sidecar "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	register(fs)
	if err := envflag.Parse(fs, args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected arguments %q: %s takes flags only (see -h)", fs.Args(), name)
	}
	return false, validate()
}
