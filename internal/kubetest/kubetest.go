// Package kubetest starts a real etcd and kube-apiserver on loopback for
// tests that need the API server's own validation, admission chain and
// storage (no kubelet, controller manager or scheduler). Each test gets its
// own processes, ports, PKI and data directory, stopped by t.Cleanup.
package kubetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/internal/testenv"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	// Config authenticates as a system:masters admin.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is a file for Config, for binaries and kubectl.
	Kubeconfig string
	// URL of the API server (https://127.0.0.1:port).
	URL string
	// Dir holds the PKI, the etcd data and the logs (etcd.log, kube-apiserver.log).
	Dir string
}

// Options tune Start.
type Options struct {
	// StartTimeout bounds etcd + API server startup (default 2 minutes: the
	// API server's post-start hooks are slow on a busy 2-core machine).
	StartTimeout time.Duration
	// ExtraAPIServerArgs are appended to the API server's command line.
	ExtraAPIServerArgs []string
}

// Start runs etcd and kube-apiserver for t, or skips/fails (testenv rules)
// when the binaries are missing.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	apiserver := testenv.KubeBinary(t, "kube-apiserver")
	etcd := testenv.Command(t, "etcd", "install Debian's etcd-server (scripts/deps.sh)")
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()

	dir := t.TempDir()
	c := &Cluster{Dir: dir}
	defer func() {
		if t.Failed() {
			c.DumpLogs(t)
		}
	}()

	clientPort, peerPort, securePort := freePort(t), freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcdDone := start(t, "etcd", dir, etcd,
		"--name=kubetest", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL, "--log-level=warn")
	if err := poll(ctx, etcdDone, func() error { return httpOK(ctx, http.DefaultClient, etcdURL+"/health") }); err != nil {
		t.Fatalf("etcd did not become healthy: %v", err)
	}

	pki := writePKI(t, dir)
	c.URL = "https://127.0.0.1:" + strconv.Itoa(securePort)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(securePort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + pki["serving.crt"], "--tls-private-key-file=" + pki["serving.key"],
		"--client-ca-file=" + pki["ca.crt"],
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki["sa.key"],
		"--service-account-signing-key-file=" + pki["sa.key"],
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		// The kubernetes Service endpoint may not be loopback; nothing here needs it.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	}
	apiDone := start(t, "kube-apiserver", dir, apiserver, append(args, opts.ExtraAPIServerArgs...)...)

	c.Config = &rest.Config{
		Host: c.URL, QPS: 200, Burst: 400,
		TLSClientConfig: rest.TLSClientConfig{CAFile: pki["ca.crt"], CertFile: pki["admin.crt"], KeyFile: pki["admin.key"]},
	}
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	c.Client = client
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, apiDone, func() error { return httpOK(ctx, hc, c.URL+"/readyz") }); err != nil {
		t.Fatalf("kube-apiserver did not become ready within %s: %v", opts.StartTimeout, err)
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthority: pki["ca.crt"]}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: pki["admin.crt"], ClientKey: pki["admin.key"]}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin"}
	kc.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	return c
}

// Namespace creates a namespace with labels and annotations, and its
// "default" ServiceAccount (no controller manager runs to make it, and the
// ServiceAccount admission plugin requires it for pods).
func (c *Cluster) Namespace(ctx context.Context, t testing.TB, name string, labels, annotations map[string]string) {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	_, err = c.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create serviceaccount %s/default: %v", name, err)
	}
}

// DumpLogs writes the tail of the etcd and API server logs to t.
func (c *Cluster) DumpLogs(t testing.TB) {
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		b, err := os.ReadFile(filepath.Join(c.Dir, name))
		if err != nil {
			continue
		}
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		t.Logf("--- tail of %s\n%s", name, b)
	}
}

// start runs a process whose output goes to dir/<name>.log; it is stopped
// (SIGTERM, then SIGKILL after 10s) when the test ends, and killed if the
// test binary dies first. The returned channel closes when it exits.
func start(t testing.TB, name, dir, bin string, args ...string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	return done
}

// writePKI writes a CA, the API server's serving certificate, an admin
// client certificate (system:masters) and the service-account signing key.
func writePKI(t testing.TB, dir string) map[string]string {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("kubetest-ca", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue("kube-apiserver", []string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc"}, nil, true, false, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.Issue("kubetest-admin", nil, []string{"system:masters"}, false, true, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := certs.NewCA("service-accounts", now, 24*time.Hour) // only its key is used
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ca.crt": ca.CertPEM, "serving.crt": serving.CertPEM, "serving.key": serving.KeyPEM,
		"admin.crt": admin.CertPEM, "admin.key": admin.KeyPEM, "sa.key": sa.KeyPEM,
	}
	paths := map[string]string{}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		p := filepath.Join(pkiDir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int { return freePort(t) }

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// poll calls f until it succeeds, ctx ends or exited (if not nil) closes.
func poll(ctx context.Context, exited <-chan struct{}, f func() error) error {
	var last error
	for {
		if last = f(); last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("process exited (last: %w)", last)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// WaitHTTPS polls url (trusting roots) until it answers 200 or ctx ends.
func WaitHTTPS(ctx context.Context, url string, roots *x509.CertPool) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if roots == nil {
		hc = http.DefaultClient
	}
	return poll(ctx, nil, func() error { return httpOK(ctx, hc, url) })
}

// ErrText is err's message, or "" for nil, for assertions on what users see.
func ErrText(err error) string {
	if err == nil {
		return ""
	}
	var s interface{ Status() metav1.Status }
	if errors.As(err, &s) {
		return strings.TrimSpace(s.Status().Message)
	}
	return err.Error()
}

// Kubectl returns kubectl from PATH, else the one scripts/build-k8s.sh builds
// into the cache on machines without one (skip/fail per testenv otherwise).
func Kubectl(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return testenv.KubeBinary(t, "kubectl")
}
