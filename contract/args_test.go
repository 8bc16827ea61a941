package contract

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The webhook renders with Args and the sidecar parses with RegisterFlags: a
// round trip must give back the same config, for defaults and for every field.
func TestServeRoundTrip(t *testing.T) {
	full := ServeConfig{
		RoleARN: "arn:aws:iam::111122223333:role/app", Listen: "127.0.0.1:9999", HealthListen: ":9998",
		Source: SourceWebIdentity, STSEndpoint: "https://sts.example", Region: "eu-west-1",
		AvailabilityZone: "eu-west-1b", NodeMetadataEndpoint: "http://10.0.0.1:1338", TokenFile: "/t",
		ExternalID: "x", SessionName: "ns-pod", SessionDuration: 2 * time.Hour, RequireIMDSv2: true,
		PodName: "p", PodNamespace: "n", IgnoreEnv: true, SkipNodeIMDSCheck: true,
	}
	marked := DefaultServeConfig()
	marked.RoleARN, marked.AgentMark = "arn:aws:iam::111122223333:role/app", DefaultAgentMark
	minimal := DefaultServeConfig()
	minimal.RoleARN = "arn:aws:iam::111122223333:role/app"
	tagged := taggedConfig()
	for _, in := range []ServeConfig{full, minimal, marked, tagged} {
		args := in.Args()
		if args[0] != "serve" {
			t.Fatalf("first arg %q", args[0])
		}
		out := DefaultServeConfig()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		out.RegisterFlags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("round trip:\n in %+v\nout %+v\nargs %v", in, out, args)
		}
		if err := out.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(minimal.Args()); got != 2 {
		t.Fatalf("minimal args = %v, want serve + role", minimal.Args())
	}
}

// --check-node-imds is on by default and in a zero ServeConfig; only false
// is rendered; the flag parses like a boolean (bare, =true, =false).
func TestCheckNodeIMDSFlag(t *testing.T) {
	c := DefaultServeConfig()
	c.RoleARN = "arn:aws:iam::111122223333:role/app"
	if c.SkipNodeIMDSCheck || (ServeConfig{}).SkipNodeIMDSCheck {
		t.Fatal("the check is off by default")
	}
	if args := c.Args(); strings.Contains(strings.Join(args, " "), "check-node-imds") {
		t.Fatalf("default rendered: %v", args)
	}
	for in, skip := range map[string]bool{"--check-node-imds": false, "--check-node-imds=true": false, "--check-node-imds=false": true, "--check-node-imds=0": true} {
		out := DefaultServeConfig()
		out.SkipNodeIMDSCheck = !skip // the parse must set it either way
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		out.RegisterFlags(fs)
		if err := fs.Parse([]string{in}); err != nil || out.SkipNodeIMDSCheck != skip {
			t.Errorf("%s: err %v, skip %v, want %v", in, err, out.SkipNodeIMDSCheck, skip)
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--check-node-imds=maybe"}); err == nil {
		t.Error("--check-node-imds=maybe accepted")
	}
	if f := fs.Lookup("check-node-imds"); f.DefValue != "true" {
		t.Errorf("default shown as %q, want true", f.DefValue)
	}
}

func TestInitRoundTrip(t *testing.T) {
	for _, in := range []InitConfig{DefaultInitConfig(), {Port: 1, AgentMark: 0xffffffff, IPv6: IPv6False, DryRun: true, Cleanup: true, IgnoreEnv: true}, {Port: 2, Block: true}} {
		out := DefaultInitConfig()
		fs := flag.NewFlagSet("init", flag.ContinueOnError)
		out.RegisterFlags(fs)
		if err := fs.Parse(in.Args()[1:]); err != nil {
			t.Fatal(err)
		}
		if in != out {
			t.Fatalf("round trip: in %+v out %+v", in, out)
		}
	}
}

func TestServeValidate(t *testing.T) {
	base := DefaultServeConfig()
	base.RoleARN = "arn:aws:iam::111122223333:role/app"
	tests := map[string]func(*ServeConfig){
		"no role":      func(c *ServeConfig) { c.RoleARN = "" },
		"bad source":   func(c *ServeConfig) { c.Source = "instance" },
		"bad listen":   func(c *ServeConfig) { c.Listen = "9181" },
		"bad sts":      func(c *ServeConfig) { c.STSEndpoint = "sts.amazonaws.com" },
		"short":        func(c *ServeConfig) { c.SessionDuration = time.Minute },
		"no token web": func(c *ServeConfig) { c.Source = SourceWebIdentity; c.TokenFile = "" },
		"web mark":     func(c *ServeConfig) { c.Source = SourceWebIdentity; c.AgentMark = 1 },
	}
	for name, mod := range tests {
		c := base
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// --exclude-uid is gone: using it must say why, not silently exempt nobody.
func TestInitExcludeUIDRemoved(t *testing.T) {
	c := DefaultInitConfig()
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	err := fs.Parse([]string{"--exclude-uid=47181"})
	if err == nil || !strings.Contains(err.Error(), "--agent-mark") {
		t.Fatalf("err = %v, want a removal message naming --agent-mark", err)
	}
}

func TestMarkFlag(t *testing.T) {
	for in, want := range map[string]uint32{"0x504f4452": 0x504f4452, "1347372114": 0x504f4452, "0": 0, "0xffffffff": 0xffffffff} {
		c := DefaultInitConfig()
		fs := flag.NewFlagSet("init", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if err := fs.Parse([]string{"--agent-mark=" + in}); err != nil || c.AgentMark != want {
			t.Errorf("--agent-mark=%s: %v %#x, want %#x", in, err, c.AgentMark, want)
		}
	}
	for _, bad := range []string{"0x100000000", "-1", "x"} {
		c := DefaultInitConfig()
		fs := flag.NewFlagSet("init", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		if err := fs.Parse([]string{"--agent-mark=" + bad}); err == nil {
			t.Errorf("--agent-mark=%s accepted", bad)
		}
	}
	if err := (InitConfig{Port: 1, IPv6: IPv6Auto, Block: true, AgentMark: 1}).Validate(); err == nil {
		t.Error("--block with --agent-mark accepted")
	}
}
