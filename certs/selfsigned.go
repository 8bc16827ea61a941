package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// Secret keys of the self-signed mode. ca.crt may hold several CAs while a
// new CA is being rolled out; ca.key is the newest CA's key.
const (
	SecretCAKey = "ca.key"
)

// SelfSigned keeps a CA and a serving certificate in a Secret that every
// replica shares (create-or-get, so concurrent replicas agree), renews them
// before they expire, serves the certificate from Store and writes the CA
// bundle into the MutatingWebhookConfiguration and the
// ValidatingWebhookConfiguration the same server answers for.
type SelfSigned struct {
	// Client reaches the API server; the dynamic client, not the typed
	// clientset (see kube.go).
	Client            dynamic.Interface
	SecretNamespace   string
	SecretName        string
	WebhookConfigName string // MutatingWebhookConfiguration; empty: none
	// ValidatingWebhookConfigName is the ValidatingWebhookConfiguration
	// whose caBundle is kept like the mutating one's; empty: none. Both are
	// published before any replica serves a certificate of a new CA.
	ValidatingWebhookConfigName string
	DNSNames                    []string
	Store                       *Store
	Logger                      *slog.Logger
	// CAValidity and CertValidity default to 10 years and 1 year; each is
	// renewed when less than a third of its life is left.
	CAValidity   time.Duration
	CertValidity time.Duration
	// BundleSettle is how long to wait after publishing a caBundle that
	// gained a CA before a serving certificate from that CA is written to the
	// Secret, so every API server's webhook informer trusts the new CA before
	// any replica serves it. Zero: no wait (tests).
	BundleSettle time.Duration
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
	if s.managesConfigs() && !s.bundleSynced.Load() {
		return fmt.Errorf("caBundle of the webhook configurations (mutating %q, validating %q) not written yet", s.WebhookConfigName, s.ValidatingWebhookConfigName)
	}
	return nil
}

// Run syncs now, whenever the Secret changes (a watch limited to that one
// object by field selector: another replica renewed it, or an operator
// deleted it) and at least every interval (renewals), until ctx is done.
// Failed syncs are retried sooner.
func (s *SelfSigned) Run(ctx context.Context, interval time.Duration) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default: // a sync is already pending; it will read the latest Secret
		}
	}
	go s.watch(ctx, poke)
	wait := time.Duration(0)
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-kick:
			timer.Stop()
		}
		if err := s.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Logger.Warn("self-signed certificate sync failed; retrying", "error", err.Error())
			wait = min(interval, 5*time.Second)
			continue
		}
		wait = interval
	}
}

// watch calls changed on every add, update or delete of the Secret. The
// list and watch carry metadata.name=<secret>, which RBAC authorizes with a
// resourceNames rule: the webhook never sees other Secrets.
func (s *SelfSigned) watch(ctx context.Context, changed func()) {
	sel := fields.OneTermEqualSelector("metadata.name", s.SecretName).String()
	secrets := s.secrets().ri
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return secrets.Watch(ctx, o)
		},
	}
	// A fake client of unit tests cannot stream a watch-list. Only the
	// events matter, not the object: unstructured needs no conversion.
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.Client), &unstructured.Unstructured{}, cache.SharedIndexInformerOptions{})
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
		DeleteFunc: func(any) { changed() },
	}); err != nil {
		s.Logger.Warn("cannot watch the certificate secret; changes are picked up at the periodic sync only", "error", err.Error())
		return
	}
	// Without this a watch refused by RBAC would only show in klog, and
	// rotations would silently wait for the periodic sync.
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return // shutting down
		}
		s.Logger.Warn("watching the certificate secret failed; retrying (the Role needs list and watch on it)",
			"secret", s.SecretNamespace+"/"+s.SecretName, "error", err.Error())
	})
	inf.RunWithContext(ctx)
}

// material is the decoded content of the Secret.
type material struct {
	bundle  []byte // ca.crt: newest CA first, then older ones still valid
	ca      *CA
	leafPEM []byte
	keyPEM  []byte
	leaf    *x509.Certificate
}

// Sync makes the Secret hold a valid CA and serving certificate, publishes
// the CA bundle and serves the certificate. Safe to run from many replicas.
//
// A rotation is make-before-break: a new CA is added to the caBundle (next
// to every earlier CA that has not expired, since a replica that has not yet
// seen the change may still serve a certificate from one) before any Secret
// holding a certificate from it is written, and a replica serves a
// certificate only after the bundle it needs has been published.
func (s *SelfSigned) Sync(ctx context.Context) error {
	secrets := s.secrets()
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
	if leafNeeded && (!staged || !now.Before(m.leaf.NotAfter)) {
		kp, err := m.ca.Issue(s.DNSNames[0], s.DNSNames, nil, true, false, now, leafValidity)
		if err != nil {
			return err
		}
		m.leafPEM, m.keyPEM = kp.CertPEM, kp.KeyPEM
		changed = true
		s.Logger.Info("issued a new serving certificate", "dns_names", s.DNSNames)
	}
	if changed {
		// Trust first: every replica that adopts this Secret serves a
		// certificate the API server already accepts.
		if err := s.publish(ctx, m.bundle); err != nil {
			return err
		}
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
	// Publish before serving: this replica may be the first to see a Secret
	// written by a replica that died before publishing its CA.
	if err := s.publish(ctx, m.bundle); err != nil {
		return err
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
	return nil
}

// publish adds bundle's CAs to the webhook configuration's caBundle and waits
// BundleSettle when that added a CA. No-op without a webhook configuration.
func (s *SelfSigned) publish(ctx context.Context, bundle []byte) error {
	if !s.managesConfigs() {
		return nil
	}
	added, err := s.publishBundle(ctx, bundle)
	if err != nil {
		return err
	}
	s.bundleSynced.Store(true)
	if added && s.BundleSettle > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the new caBundle to reach the API servers: %w", ctx.Err())
		case <-time.After(s.BundleSettle):
		}
	}
	return nil
}

// create makes the Secret, or returns the one another replica made first.
// The new CA is published before the Secret exists, so no replica can
// serve its certificate before the API server trusts it.
func (s *SelfSigned) create(ctx context.Context) (*corev1.Secret, error) {
	m, err := s.generate(s.now())
	if err != nil {
		return nil, err
	}
	if err := s.publish(ctx, m.bundle); err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.SecretName, Namespace: s.SecretNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "podrole-webhook", "app.kubernetes.io/component": "webhook-certificate"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{CAFile: m.bundle, SecretCAKey: m.ca.KeyPEM, CertFile: m.leafPEM, KeyFile: m.keyPEM},
	}
	secrets := s.secrets()
	created, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another replica won; its CA is published. Ours signs nothing:
		// withdraw it so races do not grow the bundle.
		if err := s.withdraw(ctx, m.ca.Cert); err != nil {
			s.Logger.Warn("could not remove an unused CA from the caBundle; it stays until it expires", "error", err.Error())
		}
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

// publishBundle merges bundle into every webhook's caBundle of the
// configuration and reports whether a CA was added anywhere.
func (s *SelfSigned) publishBundle(ctx context.Context, bundle []byte) (added bool, err error) {
	now := s.now()
	err = s.editBundles(ctx, func(cur []byte) []byte {
		next := MergeBundles(bundle, cur, now)
		if !added {
			have := map[string]bool{}
			for _, c := range parseBundle(cur) {
				have[string(c.Raw)] = true
			}
			for _, c := range parseBundle(next) {
				added = added || !have[string(c.Raw)]
			}
		}
		return next
	})
	return added, err
}

// withdraw removes ca from every webhook's caBundle.
func (s *SelfSigned) withdraw(ctx context.Context, ca *x509.Certificate) error {
	return s.editBundles(ctx, func(cur []byte) []byte {
		var out []byte
		for _, c := range parseBundle(cur) {
			if !bytes.Equal(c.Raw, ca.Raw) {
				out = append(out, pemCert(c)...)
			}
		}
		return out
	})
}

func (s *SelfSigned) managesConfigs() bool {
	return s.WebhookConfigName != "" || s.ValidatingWebhookConfigName != ""
}

// editBundles rewrites each webhook's caBundle with edit in the mutating
// and the validating configuration, retrying on conflicts with other
// replicas doing the same.
func (s *SelfSigned) editBundles(ctx context.Context, edit func([]byte) []byte) error {
	if s.WebhookConfigName != "" {
		if err := editConfig(ctx, s.Logger, s.mutatingConfigs(), s.WebhookConfigName, edit); err != nil {
			return err
		}
	}
	if s.ValidatingWebhookConfigName != "" {
		return editConfig(ctx, s.Logger, s.validatingConfigs(), s.ValidatingWebhookConfigName, edit)
	}
	return nil
}

// editConfig applies edit to every webhook's caBundle of the webhook
// configuration name.
func editConfig(ctx context.Context, log *slog.Logger, c webhookConfigs, name string, edit func([]byte) []byte) error {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		u, err := c.ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get %s %q to set its caBundle: %w", c.kind, name, err)
		}
		bs, err := caBundles(u)
		if err != nil {
			return fmt.Errorf("%s %q: %w", c.kind, name, err)
		}
		changed := false
		for i, b := range bs {
			if next := edit(b); !bytes.Equal(b, next) {
				bs[i] = next
				changed = true
			}
		}
		if !changed {
			return nil
		}
		if err := setCABundles(u, bs); err != nil {
			return fmt.Errorf("%s %q: %w", c.kind, name, err)
		}
		// Unwrapped: RetryOnConflict retries a conflict.
		if _, err := c.ri.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			return err
		}
		cas := 0
		if len(bs) > 0 {
			cas = len(parseBundle(bs[0]))
		}
		log.Info("caBundle updated", c.kind, name, "cas", cas)
		return nil
	})
	if err != nil {
		return fmt.Errorf("update caBundle of %s %q: %w", c.kind, name, err)
	}
	return nil
}
