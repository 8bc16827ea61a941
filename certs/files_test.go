package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newPair(t *testing.T, ca *CA, hosts ...string) KeyPair {
	t.Helper()
	kp, err := ca.Issue("webhook", hosts, nil, true, false, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func writePair(t *testing.T, dir string, kp KeyPair) {
	t.Helper()
	// Write-then-rename, as kubelet and cert-manager's csi driver do, so a
	// reader never sees a half-written file.
	for name, data := range map[string][]byte{CertFile: kp.CertPEM, KeyFile: kp.KeyPEM} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func serialOf(t *testing.T, kp KeyPair) string {
	c, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

// TestFileReload rotates the files under a live TLS server to a certificate
// from a new CA while a client keeps making fresh connections: every request
// succeeds, and new handshakes see the new certificate without a restart.
func TestFileReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca1, err := NewCA("ca-1", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := NewCA("ca-2", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, second := newPair(t, ca1, "127.0.0.1"), newPair(t, ca2, "127.0.0.1")
	writePair(t, dir, first)

	store := &Store{}
	if err := store.Ready(); err == nil {
		t.Fatal("empty store reports ready")
	}
	src := &FileSource{Dir: dir, Store: store, Logger: slog.New(slog.DiscardHandler)}
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	go src.Run(ctx, 50*time.Millisecond)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", store.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	// The client trusts both CAs, as the API server does while a caBundle
	// holds the old and the new CA.
	roots := x509.NewCertPool()
	roots.AddCert(ca1.Cert)
	roots.AddCert(ca2.Cert)
	var lastSerial atomic.Value
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, VerifyConnection: func(cs tls.ConnectionState) error {
			lastSerial.Store(cs.PeerCertificates[0].SerialNumber.String())
			return nil
		}},
	}}
	url := "https://" + ln.Addr().String() + "/"

	var failures, requests atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			requests.Add(1)
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
			} else {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				close(stop)
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor("first certificate served", func() bool { return lastSerial.Load() == serialOf(t, first) })

	// Half a rotation (new certificate, old key) must not break serving.
	if err := os.WriteFile(filepath.Join(dir, CertFile), second.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n := requests.Load()
	waitFor("requests during half rotation", func() bool { return requests.Load() > n+20 })
	if got := lastSerial.Load(); got != serialOf(t, first) {
		t.Fatalf("serving %v during a half-written rotation, want the previous certificate", got)
	}

	writePair(t, dir, second)
	waitFor("second certificate served", func() bool { return lastSerial.Load() == serialOf(t, second) })
	n = requests.Load()
	waitFor("requests after rotation", func() bool { return requests.Load() > n+20 })
	close(stop)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", f, requests.Load(), firstErr.Load())
	}
	t.Logf("%d requests, none failed, across a CA rotation", requests.Load())
}

func TestFileSourceErrors(t *testing.T) {
	dir := t.TempDir()
	src := &FileSource{Dir: dir, Store: &Store{}, Logger: slog.New(slog.DiscardHandler)}
	if _, err := src.Load(); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing files: %v", err)
	}
	ca, err := NewCA("ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newPair(t, ca, "x"), newPair(t, ca, "y")
	writePair(t, dir, KeyPair{CertPEM: a.CertPEM, KeyPEM: b.KeyPEM})
	if _, err := src.Load(); err == nil {
		t.Fatal("mismatched pair accepted")
	}
	if src.Store.Ready() == nil {
		t.Fatal("store ready after a failed load")
	}
}
