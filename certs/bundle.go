package certs

// PEM and caBundle helpers of the self-signed mode: pure functions on
// certificates and PEM bundles, no API server (selfsigned.go holds the sync
// loop that uses them).

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"time"
)

// renewDue reports whether less than a third of c's lifetime is left.
func renewDue(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotAfter.Add(-life / 3))
}

func sameNames(c *x509.Certificate, names []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(c.DNSNames)), slices.Sorted(slices.Values(names)))
}

// bundleHas reports whether leaf verifies against the bundle.
func bundleHas(bundle []byte, leaf *x509.Certificate, now time.Time) bool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return false
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err == nil
}

// validCerts returns the PEM certificates of bundle that have not expired.
func validCerts(bundle []byte, now time.Time) []byte {
	var out []byte
	for _, c := range parseBundle(bundle) {
		if now.Before(c.NotAfter) {
			out = append(out, pemCert(c)...)
		}
	}
	return out
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// parseBundle returns the certificates of a PEM bundle, skipping anything
// that does not parse (a placeholder caBundle, say).
func parseBundle(bundle []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" {
			out = append(out, c)
		}
	}
}

// MaxBundleCAs bounds the published caBundle. Each forced rotation (the
// Secret deleted) adds a CA that otherwise stays until it expires, years
// later; a replica still serving the eighth-newest CA is long gone.
const MaxBundleCAs = 8

// MergeBundles returns the caBundle to publish: the CAs of next (the
// Secret's, newest first), then those of published that are not in next,
// in their order; expired CAs dropped, duplicates removed, at most
// MaxBundleCAs.
func MergeBundles(next, published []byte, now time.Time) []byte {
	var out []byte
	seen := map[string]bool{}
	n := 0
	for _, c := range append(parseBundle(next), parseBundle(published)...) {
		if seen[string(c.Raw)] || !now.Before(c.NotAfter) || n == MaxBundleCAs {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, pemCert(c)...)
		n++
	}
	return out
}
