// Package certs provides the webhook's serving certificate: from files in a
// directory (cert-manager or any Secret volume), reloaded when they change,
// or self-signed, kept in a Secret shared by the replicas and published to
// the MutatingWebhookConfiguration's caBundle. Either way the TLS server asks
// a Store for the current certificate on every handshake, so a rotation needs
// no restart.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
)

// Store holds the current serving certificate. The zero value is empty.
type Store struct {
	cur atomic.Pointer[tls.Certificate]
}

// Set replaces the served certificate; handshakes from now on use it.
func (s *Store) Set(c *tls.Certificate) { s.cur.Store(c) }

// Current returns the served certificate, or nil.
func (s *Store) Current() *tls.Certificate { return s.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return c, nil
}

// Ready reports whether a certificate is loaded.
func (s *Store) Ready() error {
	if s.cur.Load() == nil {
		return errors.New("no serving certificate loaded yet")
	}
	return nil
}

// TLSConfig returns a server TLS config that serves s's certificate, with
// HTTP/2 allowed.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// parseKeyPair parses a PEM pair and fills Leaf, so expiry can be read.
func parseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, err
		}
		c.Leaf = leaf
	}
	return &c, nil
}
