package contract

import (
	"flag"
	"reflect"
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
		PodName: "p", PodNamespace: "n",
	}
	minimal := DefaultServeConfig()
	minimal.RoleARN = "arn:aws:iam::111122223333:role/app"
	for _, in := range []ServeConfig{full, minimal} {
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

func TestInitRoundTrip(t *testing.T) {
	for _, in := range []InitConfig{DefaultInitConfig(), {Port: 1, ExcludeUID: 0, IPv6: IPv6False, Block: true, DryRun: true, Cleanup: true}} {
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
	}
	for name, mod := range tests {
		c := base
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
