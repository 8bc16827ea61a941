//go:build linux

package main

import (
	"net"
	"syscall"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// --agent-mark: the agent checks at start that it may set the mark, and
// then dials every connection (node IMDS, STS) with it. Root here has
// CAP_NET_ADMIN; without it the start fails, naming the capability (the
// real-namespace test in sidecar/redirect runs that case with the binary).
func TestServeAgentMark(t *testing.T) {
	testenv.Root(t)
	fakeaws.IsolateEnv(t)
	control, err := markedDialControl(contract.DefaultAgentMark)
	if err != nil || control == nil {
		t.Fatalf("markedDialControl as root: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	conn, err := (&net.Dialer{Control: control}).Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if uint32(got) != contract.DefaultAgentMark {
		t.Fatalf("SO_MARK of a dialled connection = %#x, want %s", got, contract.FormatMark(contract.DefaultAgentMark))
	}

	// The whole agent with a mark, still working end to end.
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	sts := fakeaws.NewSTS(t, nil)
	r := startServe(t, "--role-arn="+testRole, "--sts-endpoint="+sts.URL, "--node-metadata-endpoint="+node.URL,
		"--agent-mark="+contract.FormatMark(contract.DefaultAgentMark), "--ignore-env")
	waitFor(t, "started", func() bool { code, _, _ := call(t, "GET", r.health+contract.PathStarted, nil); return code == 200 })
	if code, got, _ := call(t, "GET", r.imds[0]+"/latest/meta-data/placement/region", nil); code != 200 || got != "eu-west-1" {
		t.Fatalf("region from the node through the marked client: %d %q", code, got)
	}
	if rec := r.logs.logLine("starting"); rec == nil || rec["agent_mark"] != "0x504f4452" {
		t.Fatalf("starting log line lacks agent_mark: %v", rec)
	}
}
