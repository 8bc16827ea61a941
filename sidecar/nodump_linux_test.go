//go:build linux

package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// noDump leaves the process non-dumpable. It runs in a child (this test
// binary again) so the rest of the test process stays as it was.
func TestNoDump(t *testing.T) {
	if os.Getenv("PODROLE_TEST_NODUMP_CHILD") == "1" {
		before, err := dumpable()
		if err != nil || !before {
			t.Fatalf("a fresh process: dumpable=%v err=%v, want dumpable", before, err)
		}
		if err := noDump(); err != nil {
			t.Fatal(err)
		}
		if after, err := dumpable(); err != nil || after {
			t.Fatalf("after noDump: dumpable=%v err=%v, want not dumpable", after, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoDump$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "PODROLE_TEST_NODUMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNoDump") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
