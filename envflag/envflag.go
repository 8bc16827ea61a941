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

// Parse parses args into fs like ParseLookup. With getenv nil it reads the
// process environment with os.LookupEnv, so a variable set to "" counts.
// With a getenv of its own it cannot tell an empty variable from an unset
// one, and treats "" as unset: callers that pass their own environment
// should switch to ParseLookup with a lookup function.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if getenv == nil {
		return ParseLookup(fs, args, nil)
	}
	return ParseLookup(fs, args, func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	})
}

// ParseLookup parses args into fs, then fills every flag not set on the
// command line from its environment variable, looked up with lookup
// (os.LookupEnv when nil). A variable that is set, even to "", sets its
// flag: PODROLE_PROBE_LISTEN= turns an optional listener off. A value the
// flag does not accept, including "" for a non-string flag (a number, a
// boolean, a duration), is an error naming the variable.
func ParseLookup(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if f := fs.Lookup(ignoreEnvFlag); f != nil {
		if !set[ignoreEnvFlag] {
			if v, ok := lookup(EnvName(ignoreEnvFlag)); ok {
				if err := setFromEnv(fs, f, v); err != nil {
					return err
				}
			}
		}
		if f.Value.String() == "true" {
			return nil
		}
	}
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || firstErr != nil || f.Name == ignoreEnvFlag {
			return
		}
		if v, ok := lookup(EnvName(f.Name)); ok {
			firstErr = setFromEnv(fs, f, v)
		}
	})
	return firstErr
}

// setFromEnv sets f to v, read from f's environment variable.
func setFromEnv(fs *flag.FlagSet, f *flag.Flag, v string) error {
	env := EnvName(f.Name)
	if v == "" && typedNonString(f) {
		return fmt.Errorf("environment %s is set but empty, which is not a valid value for --%s: unset it or give it a value", env, f.Name)
	}
	if err := fs.Set(f.Name, v); err != nil {
		return fmt.Errorf("environment %s=%q is not a valid value for --%s: %w", env, v, f.Name, err)
	}
	return nil
}

// typedNonString reports whether f is one of the flag package's typed
// flags other than a string (bool, int, uint, float, duration, TextVar), for
// which "" is never a value. Func and custom Var flags are asked through
// their Set, which decides what "" means for them.
func typedNonString(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, isString := g.Get().(string)
	return !isString
}
