package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/podrole/podrole/bench"
	"github.com/podrole/podrole/stsdouble"
)

// The pod role and the node identity of stsdouble/testdata/config.json.
const (
	benchRole       = "arn:aws:iam::111122223333:role/app"
	nodeKeyID       = "ASIANODEROLEEXAMPLE1"
	nodeSecret      = "nodeRoleSecretAccessKeyEXAMPLE0000000000"
	nodeSessionTok  = "nodeRoleSessionTokenEXAMPLE000000000000000000000000000000000000"
	closedLoopback  = "http://127.0.0.1:9" // discard port: nothing listens, answers fast
	concurrencyList = "1,8,64"
)

// startDouble serves the STS test double on loopback inside this process.
func startDouble(o options) (*stsdouble.Double, string, func(), error) {
	cfg, err := stsdouble.LoadConfig(o.stsConf)
	if err != nil {
		return nil, "", nil, err
	}
	d, err := stsdouble.New(cfg, stsdouble.Options{})
	if err != nil {
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	srv := &http.Server{Handler: d.Handler()}
	go srv.Serve(ln)
	return d, "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// startSidecar runs podrole-sidecar serve on CPU 0 against the double and
// waits until it reports started. It returns the IMDS base URL.
func startSidecar(ctx context.Context, o options, stsURL, name string, extra ...string) (*bench.Server, string, string, error) {
	port, err := bench.FreePort()
	if err != nil {
		return nil, "", "", err
	}
	hport, err := bench.FreePort()
	if err != nil {
		return nil, "", "", err
	}
	args := append([]string{o.sidecar, "serve",
		"--role-arn=" + benchRole,
		"--listen=127.0.0.1:" + strconv.Itoa(port),
		"--health-listen=127.0.0.1:" + strconv.Itoa(hport),
		"--sts-endpoint=" + stsURL,
		"--region=us-east-1", "--availability-zone=us-east-1a",
		"--node-metadata-endpoint=" + closedLoopback,
	}, extra...)
	env := []string{os.Getenv("PODROLE_BENCH_SIDECAR_ENV"), "AWS_ACCESS_KEY_ID=" + nodeKeyID, "AWS_SECRET_ACCESS_KEY=" + nodeSecret, "AWS_SESSION_TOKEN=" + nodeSessionTok,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + closedLoopback, "AWS_REGION=us-east-1"}
	s, err := bench.Start(name, 0, env, filepath.Join(o.work, name+".log"), args...)
	if err != nil {
		return nil, "", "", err
	}
	started := "http://127.0.0.1:" + strconv.Itoa(hport) + "/started"
	if err := bench.WaitHTTP(ctx, started, http.StatusOK, 20*time.Second); err != nil {
		s.Stop()
		logTail, _ := os.ReadFile(filepath.Join(o.work, name+".log"))
		return nil, "", "", fmt.Errorf("%w\n%s", err, tail(logTail, 1500))
	}
	return s, "http://127.0.0.1:" + strconv.Itoa(port), started, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startReference runs a reference IMDS server on CPU 0 and waits for it.
func startReference(ctx context.Context, o options, name string) (*bench.Server, string, error) {
	port, err := bench.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var argv []string
	switch name {
	case "trivial net/http":
		self, err := os.Executable()
		if err != nil {
			return nil, "", err
		}
		argv = []string{self, "serve-trivial-imds", "--listen=" + addr}
	case "ec2-metadata-mock":
		if _, err := os.Stat(o.mock); err != nil {
			return nil, "", fmt.Errorf("%s not built (scripts/build-tools.sh builds it): %w", o.mock, err)
		}
		argv = []string{o.mock, "--hostname", "127.0.0.1", "--port", strconv.Itoa(port)}
	}
	s, err := bench.Start(name, 0, nil, filepath.Join(o.work, "ref-"+strconv.Itoa(port)+".log"), argv...)
	if err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	// Any HTTP answer means it is up; the trivial server 404s on "/".
	ctx2, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(base + "/latest/meta-data/iam/security-credentials/")
		if err == nil {
			resp.Body.Close()
			return s, base, nil
		}
		select {
		case <-ctx2.Done():
			s.Stop()
			return nil, "", fmt.Errorf("%s did not answer on %s: %w", name, addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type point struct {
	res      bench.Result
	cpuPerOp time.Duration
}

// measure drives base at each concurrency and records CPU time of pid.
func measure(ctx context.Context, base string, pid int, dur time.Duration, cs []int) ([]point, error) {
	var pts []point
	for _, c := range cs {
		cl := bench.NewIMDSClient(base, c)
		bench.Load(ctx, c, dur/5, cl.Sequence) // warm-up: connections, caches
		cpu0, err := bench.CPUTime(pid)
		if err != nil {
			return nil, err
		}
		r := bench.Load(ctx, c, dur, cl.Sequence)
		cpu1, err := bench.CPUTime(pid)
		if err != nil {
			return nil, err
		}
		p := point{res: r}
		if r.Ops > 0 {
			p.cpuPerOp = (cpu1 - cpu0) / time.Duration(r.Ops)
		}
		pts = append(pts, p)
		cl.HTTP.CloseIdleConnections()
	}
	return pts, nil
}

func benchIMDS(ctx context.Context, o options, out io.Writer) error {
	fmt.Fprintf(out, "## 1. IMDS serving: full IMDSv2 credential sequence (PUT token, GET listing, GET role) from cache\n")
	fmt.Fprintf(out, "target: podrole >= 80%% of the trivial server's seq/s, p99 <= 1.5x its p99, CPU/seq <= 1.5x its, 0 errors, at every concurrency\n\n")
	cs := []int{1, 8, 64}
	_, stsURL, stopDouble, err := startDouble(o)
	if err != nil {
		return err
	}
	defer stopDouble()
	results := map[string][]point{}
	names := []string{"podrole-sidecar", "trivial net/http", "ec2-metadata-mock"}
	for _, name := range names {
		var (
			s    *bench.Server
			base string
		)
		if name == "podrole-sidecar" {
			s, base, _, err = startSidecar(ctx, o, stsURL, "sidecar-imds")
		} else {
			s, base, err = startReference(ctx, o, name)
		}
		if err != nil {
			fmt.Fprintf(out, "%s: not measured: %v\n", name, err)
			continue
		}
		pts, err := measure(ctx, base, s.Pid(), o.duration, cs)
		s.Stop()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results[name] = pts
	}
	fmt.Fprintf(out, "| server | conc | seq/s | p50 | p99 | CPU/seq | errors |\n|---|---|---|---|---|---|---|\n")
	for _, name := range names {
		for i, p := range results[name] {
			fmt.Fprintf(out, "| %s | %d | %.0f | %s | %s | %s | %d |\n", name, cs[i], p.res.OpsPerSec(),
				round(p.res.P50), round(p.res.P99), round(p.cpuPerOp), p.res.Errors)
		}
	}
	side, ref := results["podrole-sidecar"], results["trivial net/http"]
	if len(side) != len(cs) || len(ref) != len(cs) {
		return fmt.Errorf("podrole-sidecar or the trivial server was not measured")
	}
	fmt.Fprintln(out)
	var errs error
	for i, c := range cs {
		s, r := side[i], ref[i]
		thr := s.res.OpsPerSec() / r.res.OpsPerSec()
		p99 := float64(s.res.P99) / float64(r.res.P99)
		cpu := float64(s.cpuPerOp) / float64(max(r.cpuPerOp, time.Microsecond))
		fmt.Fprintf(out, "conc %d: throughput %.0f%% of trivial: %s; p99 %.2fx: %s; CPU/seq %.2fx: %s; errors %d: %s\n", c,
			100*thr, bench.Verdict(thr >= 0.8, "below 80%%"), p99, bench.Verdict(p99 <= 1.5, "above 1.5x"),
			cpu, bench.Verdict(cpu <= 1.5, "above 1.5x"), s.res.Errors, bench.Verdict(s.res.Errors == 0, "first: %v", s.res.FirstError))
	}
	fmt.Fprintln(out)
	return errs
}

func round(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	}
	return d.String()
}
