//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/testenv"
	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// procStatus returns a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// The health port is reachable from other pods. 1000 connections that send
// nothing and 1000 that send 64 KiB of a header and stall (slowloris) do not
// stop /healthz from answering, and the agent (a process of its own, as in
// its container with a 64 Mi limit) stays far below that: connections past
// 64 are shed, headers past 8 KiB refused. Without the limits the same
// connections hold well over 64 MiB in the agent.
func TestHealthPortUnderSlowloris(t *testing.T) {
	fakeaws.IsolateEnv(t)
	sts := fakeaws.NewSTS(t, nil)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hport := strconv.Itoa(freePort(t))
	cmd := exec.Command(self, "serve", "--ignore-env", "--role-arn="+testRole, "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:"+hport,
		"--source=web-identity", "--token-file="+tokenFile(t), "--region=us-east-1", "--sts-endpoint="+sts.URL, "--check-node-imds=false")
	cmd.Env = []string{runAsSidecarEnv + "=1", "PATH=/usr/bin:/bin", "HOME=/nonexistent", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	logs := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	health := "http://127.0.0.1:" + hport
	healthz := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, error) {
		resp, err := healthz.Get(health + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	waitFor(t, "the agent started", func() bool {
		select {
		case <-exited:
			t.Fatalf("the agent exited:\n%s", logs)
		default:
		}
		code, _ := get(contract.PathStarted)
		return code == 200
	})
	for range 5 {
		get(contract.PathMetrics)
	}
	pid := cmd.Process.Pid
	before := procStatus(t, pid, "VmHWM")

	const idle, slow, header = 1000, 1000, 64 << 10
	conns := make(chan net.Conn, idle+slow)
	defer func() {
		close(conns)
		for c := range conns {
			c.Close()
		}
	}()
	pad := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", header) // never ends
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range idle + slow {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+hport, 10*time.Second)
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			conns <- c
			if i%2 == 1 {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(pad)) // shed or refused (431) part way: fine
			}
		}()
	}
	wg.Wait()
	// Still held open on this side: the probe gets its answer.
	for range 3 {
		if code, err := get(contract.PathHealthz); err != nil || code != 200 {
			t.Fatalf("/healthz under %d idle and %d slowloris connections: %d %v", idle, slow, code, err)
		}
	}
	peak, rss := procStatus(t, pid, "VmHWM"), procStatus(t, pid, "VmRSS")
	t.Logf("agent peak RSS %.1f MiB before, %.1f MiB after (RSS now %.1f MiB)", float64(before)/(1<<20), float64(peak)/(1<<20), float64(rss)/(1<<20))
	if raceEnabled {
		t.Log("race detector on: memory bounds not asserted")
	} else if grew := peak - before; grew > 24<<20 || peak > 64<<20 {
		t.Fatalf("the agent's peak RSS grew by %.1f MiB to %.1f MiB under idle and slowloris connections", float64(grew)/(1<<20), float64(peak)/(1<<20))
	}
	if code, _ := get(contract.PathStarted); code != 200 {
		t.Fatalf("/started after: %d", code)
	}
}
