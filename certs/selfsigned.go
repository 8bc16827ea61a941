package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secret keys of the self-signed mode. ca.crt may hold several CAs while a
// new CA is being rolled out; ca.key is the newest CA's key.
const (
	SecretCAKey = "ca.key"
)

// SelfSigned keeps a CA and a serving certificate in a Secret that every
// replica shares (create-or-get, so concurrent replicas agree), renews them
// before they expire, serves the certificate from Store and writes the CA
// bundle into the MutatingWebhookConfiguration.
type SelfSigned struct {
	Client            kubernetes.Interface
	SecretNamespace   string
	SecretName        string
	WebhookConfigName string // empty: do not touch a webhook configuration
	DNSNames          []string
	Store             *Store
	Logger            *slog.Logger
	// CAValidity and CertValidity default to 10 years and 1 year; each is
	// renewed when less than a third of its life is left.
	CAValidity   time.Duration
	CertValidity time.Duration
	Now          func() time.Time

	bundleSynced atomic.Bool
}

func (s *SelfSigned) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *SelfSigned) validities() (ca, leaf time.Duration) {
	ca, leaf = s.CAValidity, s.CertValidity
	if ca == 0 {
		ca = 10 * 365 * 24 * time.Hour
	}
	if leaf == 0 {
		leaf = 365 * 24 * time.Hour
	}
	return ca, leaf
}

// Ready reports whether a certificate is served and, when a webhook
// configuration is managed, its caBundle has been written once.
func (s *SelfSigned) Ready() error {
	if err := s.Store.Ready(); err != nil {
		return err
	}
	if s.WebhookConfigName != "" && !s.bundleSynced.Load() {
		return fmt.Errorf("caBundle of mutatingwebhookconfiguration %q not written yet", s.WebhookConfigName)
	}
	return nil
}

// Run syncs now and then every interval until ctx is done, retrying failed
// syncs sooner.
func (s *SelfSigned) Run(ctx context.Context, interval time.Duration) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := s.Sync(ctx); err != nil {
			s.Logger.Warn("self-signed certificate sync failed; retrying", "error", err.Error())
			wait = min(interval, 5*time.Second)
			continue
		}
		wait = interval
	}
}

// material is the decoded content of the Secret.
type material struct {
	bundle  []byte // ca.crt: newest CA first, then older ones still valid
	ca      *CA
	leafPEM []byte
	keyPEM  []byte
	leaf    *x509.Certificate
}

// Sync makes the Secret hold a valid CA and serving certificate, serves the
// certificate and publishes the CA bundle. Safe to run from many replicas.
func (s *SelfSigned) Sync(ctx context.Context) error {
	secrets := s.Client.CoreV1().Secrets(s.SecretNamespace)
	sec, err := secrets.Get(ctx, s.SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sec, err = s.create(ctx)
	}
	if err != nil {
		return fmt.Errorf("get secret %s/%s: %w", s.SecretNamespace, s.SecretName, err)
	}

	m, err := decode(sec)
	now := s.now()
	caValidity, leafValidity := s.validities()
	changed := false
	staged := false
	if err != nil {
		s.Logger.Warn("secret does not hold a usable CA and certificate; generating new ones", "secret", s.SecretNamespace+"/"+s.SecretName, "error", err.Error())
		if m, err = s.generate(now); err != nil {
			return err
		}
		changed = true
	} else if renewDue(m.ca.Cert, now) {
		// Stage a new CA: publish it next to the old one now; the leaf moves
		// to it at its own renewal, by when every client trusts it.
		ca, err := NewCA("podrole-webhook-ca", now, caValidity)
		if err != nil {
			return err
		}
		m.bundle = append(append([]byte{}, ca.CertPEM...), validCerts(m.bundle, now)...)
		m.ca = ca
		changed, staged = true, true
		s.Logger.Info("staged a new webhook CA", "not_after", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	leafNeeded := renewDue(m.leaf, now) || !sameNames(m.leaf, s.DNSNames) || !bundleHas(m.bundle, m.leaf, now)
	if leafNeeded && !(staged && now.Before(m.leaf.NotAfter)) {
		kp, err := m.ca.Issue(s.DNSNames[0], s.DNSNames, nil, true, false, now, leafValidity)
		if err != nil {
			return err
		}
		m.leafPEM, m.keyPEM = kp.CertPEM, kp.KeyPEM
		changed = true
		s.Logger.Info("issued a new serving certificate", "dns_names", s.DNSNames)
	}
	if changed {
		sec.Data = map[string][]byte{CAFile: m.bundle, SecretCAKey: m.ca.KeyPEM, CertFile: m.leafPEM, KeyFile: m.keyPEM}
		// resourceVersion makes this a compare-and-swap: a replica that lost
		// the race gets a conflict and adopts the winner's material next sync.
		if sec, err = secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update secret %s/%s: %w", s.SecretNamespace, s.SecretName, err)
		}
		if m, err = decode(sec); err != nil {
			return fmt.Errorf("secret %s/%s after update: %w", s.SecretNamespace, s.SecretName, err)
		}
	}
	if cur := s.Store.Current(); cur == nil || !bytes.Equal(cur.Certificate[0], m.leaf.Raw) {
		c, err := parseKeyPair(m.leafPEM, m.keyPEM)
		if err != nil {
			return fmt.Errorf("load serving certificate from secret: %w", err)
		}
		s.Store.Set(c)
		s.Logger.Info("serving certificate loaded", "secret", s.SecretNamespace+"/"+s.SecretName,
			"serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.WebhookConfigName != "" {
		if err := s.publishBundle(ctx, m.bundle); err != nil {
			return err
		}
		s.bundleSynced.Store(true)
	}
	return nil
}

// create makes the Secret, or returns the one another replica made first.
func (s *SelfSigned) create(ctx context.Context) (*corev1.Secret, error) {
	m, err := s.generate(s.now())
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.SecretName, Namespace: s.SecretNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "podrole-webhook", "app.kubernetes.io/component": "webhook-certificate"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{CAFile: m.bundle, SecretCAKey: m.ca.KeyPEM, CertFile: m.leafPEM, KeyFile: m.keyPEM},
	}
	secrets := s.Client.CoreV1().Secrets(s.SecretNamespace)
	created, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return secrets.Get(ctx, s.SecretName, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create secret: %w", err)
	}
	s.Logger.Info("created webhook certificate secret", "secret", s.SecretNamespace+"/"+s.SecretName)
	return created, nil
}

func (s *SelfSigned) generate(now time.Time) (*material, error) {
	if len(s.DNSNames) == 0 {
		return nil, errors.New("no DNS names for the serving certificate: set --service-name and --service-namespace")
	}
	caValidity, leafValidity := s.validities()
	ca, err := NewCA("podrole-webhook-ca", now, caValidity)
	if err != nil {
		return nil, err
	}
	kp, err := ca.Issue(s.DNSNames[0], s.DNSNames, nil, true, false, now, leafValidity)
	if err != nil {
		return nil, err
	}
	c, err := kp.TLS()
	if err != nil {
		return nil, err
	}
	return &material{bundle: ca.CertPEM, ca: ca, leafPEM: kp.CertPEM, keyPEM: kp.KeyPEM, leaf: c.Leaf}, nil
}

func decode(sec *corev1.Secret) (*material, error) {
	ca, err := ParseCA(sec.Data[CAFile], sec.Data[SecretCAKey])
	if err != nil {
		return nil, err
	}
	c, err := parseKeyPair(sec.Data[CertFile], sec.Data[KeyFile])
	if err != nil {
		return nil, fmt.Errorf("serving key pair: %w", err)
	}
	return &material{bundle: sec.Data[CAFile], ca: ca, leafPEM: sec.Data[CertFile], keyPEM: sec.Data[KeyFile], leaf: c.Leaf}, nil
}

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
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && now.Before(c.NotAfter) {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
}

// publishBundle writes bundle into every webhook of the configuration.
func (s *SelfSigned) publishBundle(ctx context.Context, bundle []byte) error {
	api := s.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := api.Get(ctx, s.WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %q to set its caBundle: %w", s.WebhookConfigName, err)
	}
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := api.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update caBundle of mutatingwebhookconfiguration %q: %w", s.WebhookConfigName, err)
	}
	s.Logger.Info("published CA bundle", "mutatingwebhookconfiguration", s.WebhookConfigName)
	return nil
}
