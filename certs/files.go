package certs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// File names in the certificate directory, as cert-manager and
// kubernetes.io/tls Secrets lay them out.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// FileSource loads tls.crt and tls.key from Dir into Store and reloads them
// when their contents change. It polls rather than watches: Secret volumes
// are updated by swapping a symlink, which inotify watches on the files miss,
// and two small reads per interval cost nothing.
type FileSource struct {
	Dir    string
	Store  *Store
	Logger *slog.Logger

	lastCert, lastKey []byte
}

// Load reads the pair once; it returns an error when the files are missing or
// do not form a valid pair, and keeps serving the previous pair then.
func (f *FileSource) Load() (changed bool, err error) {
	certPEM, err := os.ReadFile(filepath.Join(f.Dir, CertFile))
	if err != nil {
		return false, fmt.Errorf("read serving certificate: %w (mount a kubernetes.io/tls Secret at --cert-dir, or use --self-signed)", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(f.Dir, KeyFile))
	if err != nil {
		return false, fmt.Errorf("read serving key: %w", err)
	}
	if bytes.Equal(certPEM, f.lastCert) && bytes.Equal(keyPEM, f.lastKey) {
		return false, nil
	}
	c, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		// Writers often replace the two files one after the other: a
		// mismatched pair is usually half a rotation, retried next poll.
		return false, fmt.Errorf("load key pair from %s: %w", f.Dir, err)
	}
	f.Store.Set(c)
	f.lastCert, f.lastKey = certPEM, keyPEM
	f.Logger.Info("serving certificate loaded", "dir", f.Dir, "subject", c.Leaf.Subject.String(),
		"serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return true, nil
}

// Run reloads the pair every interval until ctx is done.
func (f *FileSource) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := f.Load(); err != nil {
			// Log a persistent problem once, not every poll.
			if err.Error() != lastErr {
				f.Logger.Warn("cannot reload serving certificate; still serving the previous one", "error", err.Error())
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
	}
}
