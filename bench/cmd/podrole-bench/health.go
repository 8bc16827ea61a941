package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podrole/podrole/bench"
)

// benchHealthPort measures the agent's health port (reachable from other
// pods) while others hold idle and slowloris connections to it: how fast
// the kubelet's probe is answered, and what the connections cost the agent.
// sidecar/serve_limits_linux_test.go asserts the behaviour (answered,
// bounded); the figures live here.
func benchHealthPort(ctx context.Context, o options, out io.Writer) error {
	const idle, slow, header, probes = 1000, 1000, 64 << 10, 50
	fmt.Fprintf(out, "## 4b. Health port under %d idle and %d slowloris connections (64 KiB of header each, never finished)\n", idle, slow)
	fmt.Fprintf(out, "target: /healthz answered within the kubelet's 1 s probe timeout (p99 under 100 ms), agent peak RSS under 32 MiB (limit 64 Mi)\n\n")
	_, stsURL, stop, err := startDouble(o)
	if err != nil {
		return err
	}
	defer stop()
	s, _, started, err := startSidecar(ctx, o, stsURL, "sidecar-health")
	if err != nil {
		return err
	}
	defer s.Stop()
	healthURL := strings.TrimSuffix(started, "/started") + "/healthz"
	addr := strings.TrimPrefix(strings.TrimSuffix(started, "/started"), "http://")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	probe := func() ([]time.Duration, int, error) {
		var ds []time.Duration
		failed := 0
		for range probes {
			t0 := time.Now()
			resp, err := client.Get(healthURL)
			if err != nil {
				failed++
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed++
				continue
			}
			ds = append(ds, time.Since(t0))
		}
		if len(ds) == 0 {
			return nil, failed, fmt.Errorf("/healthz never answered")
		}
		return ds, failed, nil
	}
	quiet, _, err := probe()
	if err != nil {
		return err
	}
	before, err := bench.PeakRSS(s.Pid())
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	pad := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", header))
	t0 := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range idle + slow {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if i%2 == 1 {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write(pad)
			}
		}()
	}
	wg.Wait()
	opened := time.Since(t0)
	loaded, failed, err := probe()
	if err != nil {
		return err
	}
	peak, err := bench.PeakRSS(s.Pid())
	if err != nil {
		return err
	}
	q, l := slices.Sorted(slices.Values(quiet)), slices.Sorted(slices.Values(loaded))
	p99 := bench.Percentile(l, 99)
	fmt.Fprintf(out, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(out, "| /healthz, no other connections: median, p99 (%d probes) | %s, %s |\n", probes, round(bench.Percentile(q, 50)), round(bench.Percentile(q, 99)))
	fmt.Fprintf(out, "| %d connections opened (and headers sent) in | %s (%d still open on the client side) |\n", idle+slow, round(opened), len(conns))
	fmt.Fprintf(out, "| /healthz while they are held: median, p99, failed | %s, %s, %d of %d |\n", round(bench.Percentile(l, 50)), round(p99), failed, probes)
	fmt.Fprintf(out, "| agent peak RSS before, after | %s, %s |\n\n", mib(before), mib(peak))
	fmt.Fprintf(out, "probe answered under load (p99 under 100 ms, none failed): %s; peak RSS under 32 MiB: %s\n\n",
		bench.Verdict(failed == 0 && p99 < 100*time.Millisecond, "p99 %s, %d failed", round(p99), failed),
		bench.Verdict(peak < 32<<20, "%s", mib(peak)))
	return nil
}
