package contract

import (
	"flag"
	"testing"
	"time"
)

func TestWaitRoundTrip(t *testing.T) {
	for _, in := range []WaitConfig{DefaultWaitConfig(), {URL: "http://127.0.0.1:9300/started", Timeout: 90 * time.Second}} {
		out := DefaultWaitConfig()
		fs := flag.NewFlagSet("wait", flag.ContinueOnError)
		out.RegisterFlags(fs)
		if err := fs.Parse(in.Args()[1:]); err != nil {
			t.Fatal(err)
		}
		if in != out {
			t.Fatalf("round trip: in %+v out %+v", in, out)
		}
		if err := out.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if err := (WaitConfig{URL: "127.0.0.1:9182", Timeout: time.Second}).Validate(); err == nil {
		t.Fatal("a URL without scheme was accepted")
	}
}
