package envflag

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantN   int
		wantErr string
	}{
		{name: "default", want: "def", wantN: 1},
		{name: "env", env: map[string]string{"PODROLE_ROLE_ARN": "fromenv", "PODROLE_COUNT": "3"}, want: "fromenv", wantN: 3},
		{name: "flag wins", args: []string{"--role-arn=fromflag"}, env: map[string]string{"PODROLE_ROLE_ARN": "fromenv"}, want: "fromflag", wantN: 1},
		{name: "bad env", env: map[string]string{"PODROLE_COUNT": "x"}, wantErr: "PODROLE_COUNT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			s := fs.String("role-arn", "def", "")
			n := fs.Int("count", 1, "")
			err := Parse(fs, tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *s != tt.want || *n != tt.wantN {
				t.Fatalf("got %q %d, want %q %d", *s, *n, tt.want, tt.wantN)
			}
		})
	}
}

// With --ignore-env (or PODROLE_IGNORE_ENV=true) nothing else comes from the
// environment: a pod's env must not configure podrole's containers.
func TestIgnoreEnv(t *testing.T) {
	env := map[string]string{"PODROLE_ROLE_ARN": "fromenv", "PODROLE_DRY_RUN": "true"}
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantARN string
		wantDry bool
	}{
		{name: "flag", args: []string{"--ignore-env"}, env: env, wantARN: "def"},
		{name: "env var", env: map[string]string{"PODROLE_IGNORE_ENV": "true", "PODROLE_ROLE_ARN": "fromenv"}, wantARN: "def"},
		{name: "flag false beats env", args: []string{"--ignore-env=false"}, env: map[string]string{"PODROLE_IGNORE_ENV": "true", "PODROLE_ROLE_ARN": "fromenv"}, wantARN: "fromenv"},
		{name: "not set", env: env, wantARN: "fromenv", wantDry: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			s := fs.String("role-arn", "def", "")
			dry := fs.Bool("dry-run", false, "")
			fs.Bool("ignore-env", false, "")
			if err := Parse(fs, tt.args, func(k string) string { return tt.env[k] }); err != nil {
				t.Fatal(err)
			}
			if *s != tt.wantARN || *dry != tt.wantDry {
				t.Fatalf("role-arn %q dry-run %v, want %q %v", *s, *dry, tt.wantARN, tt.wantDry)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("node-metadata-endpoint"); got != "PODROLE_NODE_METADATA_ENDPOINT" {
		t.Fatal(got)
	}
}

// TestParseLookup: a variable that is set, even to "", sets its flag; an
// empty value for a typed non-string flag is an error naming the variable;
// Func and custom flags decide through their Set; unset variables leave the
// default; the command line still wins.
func TestParseLookup(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantProbe string
		wantCount int
		wantPull  string
		wantErr   string
	}{
		{name: "unset", wantProbe: ":8080", wantCount: 1, wantPull: "default"},
		{name: "empty string turns it off", env: map[string]string{"PODROLE_PROBE_LISTEN": ""}, wantProbe: "", wantCount: 1, wantPull: "default"},
		{name: "value", env: map[string]string{"PODROLE_PROBE_LISTEN": ":9", "PODROLE_COUNT": "3"}, wantProbe: ":9", wantCount: 3, wantPull: "default"},
		{name: "flag wins over empty", args: []string{"--probe-listen=:7"}, env: map[string]string{"PODROLE_PROBE_LISTEN": ""}, wantProbe: ":7", wantCount: 1, wantPull: "default"},
		{name: "flag wins over bad empty", args: []string{"--count=2"}, env: map[string]string{"PODROLE_COUNT": ""}, wantProbe: ":8080", wantCount: 2, wantPull: "default"},
		{name: "empty int", env: map[string]string{"PODROLE_COUNT": ""}, wantErr: "PODROLE_COUNT is set but empty"},
		{name: "empty bool", env: map[string]string{"PODROLE_DRY_RUN": ""}, wantErr: "PODROLE_DRY_RUN is set but empty"},
		{name: "empty duration", env: map[string]string{"PODROLE_INTERVAL": ""}, wantErr: "PODROLE_INTERVAL is set but empty"},
		{name: "bad int", env: map[string]string{"PODROLE_COUNT": "x"}, wantErr: `PODROLE_COUNT="x"`},
		{name: "empty Func value goes to its Set", env: map[string]string{"PODROLE_PULL_POLICY": ""}, wantProbe: ":8080", wantCount: 1, wantPull: ""},
		{name: "Func Set refuses", env: map[string]string{"PODROLE_PULL_POLICY": "Sometimes"}, wantErr: "PODROLE_PULL_POLICY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			probe := fs.String("probe-listen", ":8080", "")
			n := fs.Int("count", 1, "")
			fs.Bool("dry-run", false, "")
			fs.Duration("interval", time.Second, "")
			pull := "default"
			fs.Func("pull-policy", "", func(v string) error {
				if v != "" && v != "Always" {
					return errors.New("not a pull policy")
				}
				pull = v
				return nil
			})
			err := ParseLookup(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *probe != tt.wantProbe || *n != tt.wantCount || pull != tt.wantPull {
				t.Fatalf("probe-listen %q count %d pull %q, want %q %d %q", *probe, *n, pull, tt.wantProbe, tt.wantCount, tt.wantPull)
			}
		})
	}
}

// TestParseProcessEnv: Parse with a nil getenv reads the process
// environment with LookupEnv semantics (set but empty counts); Parse with a
// getenv of its own cannot see the difference and keeps "" as unset.
func TestParseProcessEnv(t *testing.T) {
	t.Setenv("PODROLE_PROBE_LISTEN", "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	probe := fs.String("probe-listen", ":8080", "")
	if err := Parse(fs, nil, nil); err != nil || *probe != "" {
		t.Fatalf("Parse(nil getenv): probe-listen %q, %v; want it turned off", *probe, err)
	}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	probe = fs.String("probe-listen", ":8080", "")
	if err := Parse(fs, nil, func(string) string { return "" }); err != nil || *probe != ":8080" {
		t.Fatalf("Parse(own getenv): probe-listen %q, %v; want the default", *probe, err)
	}
}

// TestIgnoreEnvLookup: --ignore-env still keeps every other variable out,
// even a set-but-empty one that would be an error; an empty
// PODROLE_IGNORE_ENV is itself an error (it is a boolean).
func TestIgnoreEnvLookup(t *testing.T) {
	env := map[string]string{"PODROLE_COUNT": "", "PODROLE_PROBE_LISTEN": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	probe := fs.String("probe-listen", ":8080", "")
	fs.Int("count", 1, "")
	fs.Bool("ignore-env", false, "")
	if err := ParseLookup(fs, []string{"--ignore-env"}, lookup); err != nil || *probe != ":8080" {
		t.Fatalf("--ignore-env: probe-listen %q, %v", *probe, err)
	}
	env["PODROLE_IGNORE_ENV"] = ""
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Bool("ignore-env", false, "")
	if err := ParseLookup(fs, nil, lookup); err == nil || !strings.Contains(err.Error(), "PODROLE_IGNORE_ENV is set but empty") {
		t.Fatalf("empty PODROLE_IGNORE_ENV: %v", err)
	}
}
