package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// project lays data out in dir as the kubelet's atomic writer updates a
// Secret volume: files in a fresh ..<timestamp> directory, a ..data symlink
// to it swapped by rename, per-key symlinks through ..data, and the previous
// directory removed.
func project(t *testing.T, dir string, gen int, data map[string][]byte) {
	t.Helper()
	ts := fmt.Sprintf("..2026_11_28_00_00_00.%09d", gen)
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, ts, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k := range data {
		if _, err := os.Lstat(filepath.Join(dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFileSourceFollowsKubeletSymlinkSwap: a Secret volume updated by
// swapping ..data (the file paths themselves never change, which is why
// FileSource polls contents instead of watching the files) is picked up;
// swaps racing the poll never load a certificate with another generation's
// key, and the last generation is served in the end.
func TestFileSourceFollowsKubeletSymlinkSwap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca, err := NewCA("ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const generations = 40
	pairs := make([]KeyPair, generations)
	for i := range pairs {
		pairs[i] = newPair(t, ca, "127.0.0.1")
	}
	data := func(i int) map[string][]byte {
		return map[string][]byte{CertFile: pairs[i].CertPEM, KeyFile: pairs[i].KeyPEM, CAFile: ca.CertPEM}
	}
	project(t, dir, 0, data(0))
	store := &Store{}
	src := &FileSource{Dir: dir, Store: store, Logger: slog.New(slog.DiscardHandler)}
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	go src.Run(ctx, time.Millisecond)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", store.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	var handshakes, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots})
			handshakes.Add(1)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				continue
			}
			conn.Close()
		}
	}()
	for i := 1; i < generations; i++ {
		project(t, dir, i, data(i))
		time.Sleep(2 * time.Millisecond)
	}
	want := serialOf(t, pairs[generations-1])
	for store.Current() == nil || store.Current().Leaf.SerialNumber.String() != want {
		select {
		case <-ctx.Done():
			t.Fatal("the last generation was never served")
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(stop)
	<-clientDone
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d handshakes failed across %d ..data swaps; first: %v", f, handshakes.Load(), generations, firstErr.Load())
	}
	t.Logf("%d handshakes across %d ..data swaps, none failed", handshakes.Load(), generations)
}
