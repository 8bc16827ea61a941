package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/internal/kubetest"
	"github.com/podrole/podrole/internal/testenv"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// certManagerModule is the cert-manager release whose CRDs the cert-manager
// overlay is checked against.
const certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"

// certManagerCRDs writes cert-manager's CRDs, as shipped in the module this
// release ships (its Helm chart's crd-*.yaml templates, whose
// only template lines are the install switch and labels), to one file.
func certManagerCRDs(t *testing.T) string {
	t.Helper()
	goBin := testenv.Command(t, "go", "install Go")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Not a go.mod requirement: download (from the module cache when there)
	// the version the manifests are written against; go.mod is untouched.
	out, err := exec.CommandContext(ctx, goBin, "mod", "download", "-json", certManagerModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", certManagerModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s gave no directory: %v\n%s", certManagerModule, err, out)
	}
	files, _ := filepath.Glob(filepath.Join(mod.Dir, "deploy", "charts", "cert-manager", "templates", "crd-*.yaml"))
	if len(files) < 6 {
		t.Fatalf("cert-manager module has %d CRD templates, want at least 6 (issuers, certificates, ...)", len(files))
	}
	template := regexp.MustCompile(`(?m)^.*\{\{.*\}\}.*\n`)
	var b bytes.Buffer
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(template.ReplaceAll(raw, nil))
	}
	path := filepath.Join(t.TempDir(), "cert-manager-crds.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCertManagerOverlayServerDryRun: overlays/cert-manager is accepted by a
// real API server that knows cert-manager's CRDs (schemas and strict field
// validation: a misspelt Certificate field fails), and refused by one that
// does not (so the check is not vacuous).
func TestCertManagerOverlayServerDryRun(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{})
	kubectl := kubetest.Kubectl(t)
	crds := certManagerCRDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := func(args ...string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		out, err := exec.CommandContext(cctx, kubectl, append([]string{"--kubeconfig=" + cluster.Kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}
	cluster.Namespace(ctx, t, "podrole-system", nil, nil)
	overlay := filepath.Join("..", "manifests", "overlays", "cert-manager")

	if out, err := k("apply", "--dry-run=server", "-k", overlay); err == nil || !strings.Contains(out, "cert-manager.io") {
		t.Fatalf("dry run without cert-manager's CRDs: err=%v, want a refusal naming cert-manager.io kinds:\n%s", err, out)
	}
	// Server-side: the Certificate CRD is too large for the last-applied annotation.
	if out, err := k("apply", "--server-side", "-f", crds); err != nil {
		t.Fatalf("apply cert-manager CRDs: %v\n%s", err, out)
	}
	if out, err := k("wait", "--for=condition=Established", "--timeout=60s", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io"); err != nil {
		t.Fatalf("cert-manager CRDs not established: %v\n%s", err, out)
	}
	out, err := k("apply", "--dry-run=server", "-k", overlay)
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k manifests/overlays/cert-manager: %v\n%s", err, out)
	}
	for _, want := range []string{"certificate.cert-manager.io/podrole-webhook-serving", "certificate.cert-manager.io/podrole-webhook-ca",
		"issuer.cert-manager.io/podrole-ca", "issuer.cert-manager.io/podrole-selfsigned", "mutatingwebhookconfiguration.admissionregistration.k8s.io/podrole-webhook",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/podrole-webhook"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run did not report %s:\n%s", want, out)
		}
	}
}

// kubeletProjection writes data into dir the way the kubelet's atomic writer
// updates a Secret volume: a new timestamped directory, a ..data symlink
// swapped to it by rename, and per-key symlinks through ..data.
func kubeletProjection(dir string, data map[string][]byte, gen int) error {
	ts := filepath.Join(dir, fmt.Sprintf("..2026_11_28_00_00_00.%09d", gen))
	if err := os.Mkdir(ts, 0o755); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), v, 0o600); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for k := range data {
		if _, err := os.Lstat(filepath.Join(dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				return err
			}
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// TestCertManagerRotationAgainstAPIServer runs the webhook in cert-manager
// mode (--cert-dir) behind a real API server. The test plays cert-manager
// (renews the serving certificate with a new key by updating the Secret's
// tls.crt/tls.key/ca.crt), the kubelet (projects the Secret into --cert-dir
// through the atomic writer's ..data symlink swap) and the CA injector
// (copies ca.crt into the caBundle of both webhook configurations). Pod
// creations flow through the API server, and so through /mutate and
// /validate, the whole time; none may fail, and the webhook must serve the
// new certificate without a restart.
func TestCertManagerRotationAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := cluster.Client
	cluster.Namespace(ctx, t, "podrole-system", nil, nil)
	cluster.Namespace(ctx, t, "apps", map[string]string{contract.LabelInject: contract.InjectEnabled}, nil)

	ca, err := certs.NewCA("podrole-webhook-ca", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func() map[string][]byte {
		kp, err := ca.Issue("podrole-webhook", []string{"127.0.0.1"}, nil, true, false, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{corev1.TLSCertKey: kp.CertPEM, corev1.TLSPrivateKeyKey: kp.KeyPEM, certs.CAFile: ca.CertPEM}
	}
	secrets := c.CoreV1().Secrets("podrole-system")
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "podrole-webhook-tls"}, Type: corev1.SecretTypeTLS, Data: issue()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// kubelet and CA injector stand-ins: follow the Secret.
	certDir := t.TempDir()
	port, probePort := kubetest.FreePort(t), kubetest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	mwcs := c.AdmissionregistrationV1().MutatingWebhookConfigurations()
	vwcs := c.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	follow := func(gen int, lastRV string) (string, error) {
		sec, err := secrets.Get(ctx, "podrole-webhook-tls", metav1.GetOptions{})
		if err != nil || sec.ResourceVersion == lastRV {
			return lastRV, err
		}
		if err := kubeletProjection(certDir, sec.Data, gen); err != nil {
			return lastRV, fmt.Errorf("project secret: %w", err)
		}
		mwc, err := mwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
		if err != nil {
			return sec.ResourceVersion, nil // not created yet: created with the bundle below
		}
		if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, sec.Data[certs.CAFile]) {
			for i := range mwc.Webhooks {
				mwc.Webhooks[i].ClientConfig.CABundle = sec.Data[certs.CAFile]
			}
			if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
				return lastRV, err
			}
		}
		vwc, err := vwcs.Get(ctx, "podrole-webhook", metav1.GetOptions{})
		if err != nil {
			return sec.ResourceVersion, nil
		}
		if !bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, sec.Data[certs.CAFile]) {
			for i := range vwc.Webhooks {
				vwc.Webhooks[i].ClientConfig.CABundle = sec.Data[certs.CAFile]
			}
			if _, err := vwcs.Update(ctx, vwc, metav1.UpdateOptions{}); err != nil {
				return lastRV, err
			}
		}
		return sec.ResourceVersion, nil
	}
	rv, err := follow(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(certDir, certs.CertFile)); err != nil || target != filepath.Join("..data", certs.CertFile) {
		t.Fatalf("projection is not the kubelet's layout: %q %v", target, err)
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		for gen := 1; ; gen++ {
			select {
			case <-followCtx.Done():
				return
			case <-time.After(200 * time.Millisecond): // the kubelet's sync is slower; faster only speeds the test
			}
			if next, err := follow(gen, rv); err == nil {
				rv = next
			} else if followCtx.Err() == nil {
				t.Errorf("kubelet/cainjector stand-in: %v", err)
			}
		}
	}()
	defer func() { stopFollow(); <-followDone }()

	runWebhook(ctx, t, probePort,
		"--listen="+addr,
		"--cert-dir="+certDir, "--cert-reload-interval=100ms", "--kubeconfig="+cluster.Kubeconfig,
		"--sidecar-image="+testImage, "--base-role-arn="+testBase, "--region=eu-west-1")
	if _, err := mwcs.Create(ctx, baseWebhookConfig(t, "https://"+addr+"/mutate", ca.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vwcs.Create(ctx, validatingConfig(t, "https://"+addr+"/validate", ca.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	served := func() string {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only reads the serial
		if err != nil {
			return ""
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	injected := func() error {
		p, err := c.CoreV1().Pods("apps").Create(ctx, testPod("probe", map[string]string{contract.AnnotationRole: "app"}, nil, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
			return fmt.Errorf("pod not injected: %v", p.Annotations)
		}
		return nil
	}
	// The API server picks the configuration up asynchronously.
	for injected() != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("webhook never took effect: %v", injected())
		case <-time.After(100 * time.Millisecond):
		}
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stopProbe := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			select {
			case <-stopProbe:
				return
			default:
			}
			if err := injected(); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}()

	for round := range 3 {
		before := served()
		sec, err := secrets.Get(ctx, "podrole-webhook-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data = issue() // cert-manager renewal, rotationPolicy Always: new key
		if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for s := served(); s == before || s == ""; s = served() {
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: the webhook still serves serial %s after the Secret changed", round, before)
			case <-time.After(50 * time.Millisecond):
			}
		}
		n := ok.Load()
		for ok.Load() < n+5 { // admissions through the new certificate
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: no admission after the rotation", round)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	close(stopProbe)
	<-probeDone
	t.Logf("cert-manager rotation, 3 renewals: %d admissions, %d failed", ok.Load(), failed.Load())
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d admissions failed across the renewals; first: %v", f, ok.Load()+f, firstErr.Load())
	}
	var roots = x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if err := kubetest.WaitHTTPS(ctx, "https://"+addr+"/healthz", roots); err != nil {
		t.Fatalf("renewed certificate does not verify against the injected CA: %v", err)
	}
}

// baseWebhookConfig is manifests/base's MutatingWebhookConfiguration with a
// URL client config for the in-process webhook and caBundle.
func baseWebhookConfig(t *testing.T, url string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "manifests", "base", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.Unmarshal(raw, &mwc); err != nil || len(mwc.Webhooks) == 0 {
		t.Fatalf("manifests/base/mutatingwebhookconfiguration.yaml: %v (%d webhooks)", err, len(mwc.Webhooks))
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	return &mwc
}
