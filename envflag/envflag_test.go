package envflag

import (
	"flag"
	"strings"
	"testing"
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
