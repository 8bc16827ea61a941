package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/internal/kubetest"
)

// TestWebhookFigures is section 5 of `make bench`: /mutate for a typical pod
// over TLS, HTTP/1.1 and HTTP/2, at concurrency 1, 8 and 64, beside a trivial
// HTTPS server that decodes the review and returns a fixed patch. It prints
// figures and verdicts; it asserts only that every admission succeeded.
// It runs only under `make bench` (PODROLE_BENCH=1): it takes minutes.
func TestWebhookFigures(t *testing.T) {
	wb := newWebhookBench(t)
	ctx, dur := context.Background(), wb.dur
	// The reference is a small binary of its own (bench/cmd/trivial-webhook),
	// built like podrole-webhook, so its CPU and RSS figures are a webhook's.
	trivial := filepath.Join(wb.dir, "trivial-webhook")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", trivial, "./cmd/trivial-webhook")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the trivial reference webhook: %v\n%s", err, out)
	}
	servers := []server{
		wb.startPodrole(),
		wb.start("trivial net/http", nil, trivial, "--cert="+filepath.Join(wb.dir, "tls.crt"), "--key="+filepath.Join(wb.dir, "tls.key")),
	}
	roots, body := wb.roots, wb.body

	type row struct {
		server, proto string
		conc          int
		res           Result
		cpu           time.Duration
	}
	var rows []row
	for _, h2 := range []bool{false, true} {
		for _, conc := range []int{1, 8, 64} {
			for _, s := range servers {
				c := NewWebhookClient(s.url, body, roots, h2, conc, `"patch":"`)
				Load(ctx, conc, dur/5, c.Admit) // warm-up
				cpu0, err := CPUTime(s.cmd.Process.Pid)
				if err != nil {
					t.Fatal(err)
				}
				r := Load(ctx, conc, dur, c.Admit)
				cpu1, _ := CPUTime(s.cmd.Process.Pid)
				c.Close()
				var per time.Duration
				if r.Ops > 0 {
					per = (cpu1 - cpu0) / time.Duration(r.Ops)
				}
				if r.Errors > 0 {
					t.Errorf("%s %s conc %d: %d errors, first: %v", s.name, c.Proto, conc, r.Errors, r.FirstError)
				}
				rows = append(rows, row{s.name, c.Proto, conc, r, per})
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "## 5. Webhook: /mutate for a typical pod over TLS (server on CPU 0, client on CPU 1)\n")
	fmt.Fprintf(&out, "target: >= 85%% of the trivial server's admissions/s, CPU/admission <= 1.3x its, RSS < 20 MiB after load\n\n")
	fmt.Fprintf(&out, "| server | proto | conc | adm/s | p50 | p99 | CPU/adm | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&out, "| %s | %s | %d | %.0f | %s | %s | %s | %d |\n", r.server, r.proto, r.conc, r.res.OpsPerSec(),
			fmtDur(r.res.P50), fmtDur(r.res.P99), fmtDur(r.cpu), r.res.Errors)
	}
	fmt.Fprintln(&out)
	for i := 0; i+1 < len(rows); i += 2 {
		p, ref := rows[i], rows[i+1]
		thr := p.res.OpsPerSec() / ref.res.OpsPerSec()
		cpu := float64(p.cpu) / float64(max(ref.cpu, time.Microsecond))
		fmt.Fprintf(&out, "%s conc %d: throughput %.0f%% of trivial: %s; CPU/adm %.2fx: %s\n", p.proto, p.conc,
			100*thr, Verdict(thr >= 0.85, "below 85%%"), cpu, Verdict(cpu <= 1.3, "above 1.3x"))
	}
	rss, err := RSS(servers[0].cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	refRSS, _ := RSS(servers[1].cmd.Process.Pid)
	// The split shows what a change can move: anon is heap, stacks and
	// runtime; file-backed is the executable's pages (mostly what it links).
	anon, file := RSSSplit(servers[0].cmd.Process.Pid)
	refAnon, refFile := RSSSplit(servers[1].cmd.Process.Pid)
	fmt.Fprintf(&out, "\npodrole-webhook RSS after load: %.1f MiB (anon %.1f, file-backed %.1f; trivial: %.1f MiB, anon %.1f, file-backed %.1f): %s\n\n",
		mib(rss), mib(anon), mib(file), mib(refRSS), mib(refAnon), mib(refFile), Verdict(rss < 20<<20, "%.1f MiB", mib(rss)))
	fmt.Print(out.String())
	if p := os.Getenv("PODROLE_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// server is a webhook process under measurement.
type server struct {
	name string
	cmd  *exec.Cmd
	url  string
	addr string
}

// webhookBench is what the webhook figures share: a kube-apiserver with
// the namespace shop (allow-list checkout-*), a serving certificate and CA
// in dir, the typical pod's review, and the time per load point.
type webhookBench struct {
	t     *testing.T
	dir   string
	bin   string // podrole-webhook
	kube  string // kubeconfig of the kube-apiserver
	roots *x509.CertPool
	body  []byte
	dur   time.Duration
}

// newWebhookBench skips unless PODROLE_BENCH=1 (a benchmark, not a test: it
// takes minutes) and sets up what the webhook figures share.
func newWebhookBench(t *testing.T) *webhookBench {
	if os.Getenv("PODROLE_BENCH") != "1" {
		t.Skip("a benchmark, not a test: run `make bench`")
	}
	bin, err := filepath.Abs(envOr("PODROLE_WEBHOOK_BIN", "../bin/podrole-webhook"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: run `make build`", bin)
	}
	wb := &webhookBench{t: t, dir: t.TempDir(), bin: bin, dur: 5 * time.Second}
	if d, err := time.ParseDuration(os.Getenv("PODROLE_BENCH_DURATION")); err == nil {
		wb.dur = d
	}
	cluster := kubetest.Start(t, kubetest.Options{})
	cluster.Namespace(context.Background(), t, "shop", map[string]string{"podrole.io/inject": "enabled"},
		map[string]string{"iam.amazonaws.com/allowed-roles": `["checkout-*"]`})
	wb.kube = cluster.Kubeconfig

	ca, err := certs.NewCA("podrole-bench-ca", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("127.0.0.1", []string{"127.0.0.1"}, nil, true, false, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM, "ca.crt": ca.CertPEM} {
		if err := os.WriteFile(filepath.Join(wb.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wb.roots = x509.NewCertPool()
	wb.roots.AppendCertsFromPEM(ca.CertPEM)
	if wb.body, err = TypicalPodReview("shop"); err != nil {
		t.Fatal(err)
	}
	return wb
}

// startPodrole starts podrole-webhook as `make bench` measures it.
func (wb *webhookBench) startPodrole() server {
	return wb.start("podrole-webhook", nil, wb.bin, "--cert-dir="+wb.dir, "--kubeconfig="+wb.kube,
		"--sidecar-image=localhost/podrole-sidecar:dev", "--base-role-arn=arn:aws:iam::111122223333:role/",
		"--region=eu-west-1", "--log-level=warn")
}

// start runs argv on CPU 0 (the load generator runs on CPU 1) listening on
// a free loopback port, until the test ends, and waits until it admits the
// typical pod.
func (wb *webhookBench) start(name string, env []string, argv ...string) server {
	t := wb.t
	port := mustPort(t)
	probe := mustPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"-c", "0"}, argv...)
	args = append(args, "--listen="+addr)
	if name == "podrole-webhook" {
		args = append(args, "--probe-listen=127.0.0.1:"+strconv.Itoa(probe))
	}
	cmd := exec.Command("taskset", args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(wb.dir, logName(name)))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "https://" + addr + "/mutate"
	// Ready means the namespace cache is synced: a first admission proves it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := NewWebhookClient(url, wb.body, wb.roots, false, 1, `"patch":"`)
		err := c.Admit(context.Background())
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(wb.dir, logName(name)))
			t.Fatalf("%s never admitted the typical pod: %v\n%s", name, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return server{name: name, cmd: cmd, url: url, addr: addr}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mustPort(t *testing.T) int {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fmtDur(d time.Duration) string {
	if d >= time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(100 * time.Nanosecond).String()
}

func logName(server string) string {
	return strings.NewReplacer(" ", "-", "/", "-").Replace(server) + ".log"
}
