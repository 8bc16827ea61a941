// Package envflag lets every flag of a FlagSet also come from the environment
// as PODROLE_<NAME> (upper snake case: --role-arn -> PODROLE_ROLE_ARN).
// A flag given on the command line wins over the environment. A FlagSet with
// a boolean flag "ignore-env" (contract.IgnoreEnvFlag) reads nothing from the
// environment once that flag is true on the command line or in its own
// variable: podrole's injected containers run with it, so a pod's env,
// envFrom and service links cannot configure them.
package envflag

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// ignoreEnvFlag is contract.IgnoreEnvFlag (not imported: contract imports nothing of ours).
const ignoreEnvFlag = "ignore-env"

// Prefix is prepended to every environment variable name.
const Prefix = "PODROLE_"

// EnvName returns the environment variable that feeds the flag called name.
func EnvName(name string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then fills every flag not set on the command line
// from its environment variable, looked up with getenv (os.Getenv when nil).
// A malformed environment value is an error naming the variable.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if f := fs.Lookup(ignoreEnvFlag); f != nil {
		if !set[ignoreEnvFlag] {
			if v := getenv(EnvName(ignoreEnvFlag)); v != "" {
				if err := fs.Set(ignoreEnvFlag, v); err != nil {
					return fmt.Errorf("environment %s=%q is not a valid value for --%s: %w", EnvName(ignoreEnvFlag), v, ignoreEnvFlag, err)
				}
			}
		}
		if f.Value.String() == "true" {
			return nil
		}
	}
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || firstErr != nil {
			return
		}
		env := EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			firstErr = fmt.Errorf("environment %s=%q is not a valid value for --%s: %w", env, v, f.Name, err)
		}
	})
	return firstErr
}
