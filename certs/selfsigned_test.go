package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

const (
	testNS     = "podrole-system"
	testSecret = "podrole-webhook-tls"
	testMWC    = "podrole-webhook"
)

var testNames = []string{"podrole-webhook.podrole-system.svc", "podrole-webhook.podrole-system.svc.cluster.local"}

func newReplica(client fakeCluster, now func() time.Time) *SelfSigned {
	return &SelfSigned{Client: client, SecretNamespace: testNS, SecretName: testSecret, WebhookConfigName: testMWC,
		DNSNames: testNames, Store: &Store{}, Logger: slog.New(slog.DiscardHandler), Now: now}
}

// fakeCluster is client-go's fake dynamic client, as SelfSigned uses it in
// the webhook, with the typed reads and writes the tests make.
type fakeCluster struct {
	*dynamicfake.FakeDynamicClient
}

// IsWatchListSemanticsUnSupported tells the informer that the fake cannot
// stream a watch-list (client-go's typed fake says so of itself; the
// dynamic fake does not).
func (fakeCluster) IsWatchListSemanticsUnSupported() bool { return true }

// newFake is a cluster holding objs (typed objects of k8s.io/api).
func newFake(t *testing.T, objs ...runtime.Object) fakeCluster {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, admissionregistrationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return fakeCluster{dynamicfake.NewSimpleDynamicClient(scheme, objs...)}
}

func (c fakeCluster) secrets() typed[corev1.Secret] {
	return (&SelfSigned{Client: c, SecretNamespace: testNS}).secrets()
}

func (c fakeCluster) mutatingConfigs() typed[admissionregistrationv1.MutatingWebhookConfiguration] {
	gv := admissionregistrationv1.SchemeGroupVersion
	return typed[admissionregistrationv1.MutatingWebhookConfiguration]{
		ri: c.Resource(gv.WithResource("mutatingwebhookconfigurations")), gvk: gv.WithKind("MutatingWebhookConfiguration")}
}

func (c fakeCluster) validatingConfigs() typed[admissionregistrationv1.ValidatingWebhookConfiguration] {
	gv := admissionregistrationv1.SchemeGroupVersion
	return typed[admissionregistrationv1.ValidatingWebhookConfiguration]{
		ri: c.Resource(gv.WithResource("validatingwebhookconfigurations")), gvk: gv.WithKind("ValidatingWebhookConfiguration")}
}

func (c fakeCluster) deleteSecret(ctx context.Context, name string) error {
	return c.secrets().ri.Delete(ctx, name, metav1.DeleteOptions{})
}

func newFakeCluster(t *testing.T) fakeCluster {
	return newFake(t, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testMWC},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pods.podrole.io"}},
	})
}

// verifies reports whether the replica's served certificate chains to the
// caBundle the API server would use, for name.
func verifies(t *testing.T, client fakeCluster, r *SelfSigned, now time.Time) {
	t.Helper()
	mwc, err := client.mutatingConfigs().Get(context.Background(), testMWC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatal("caBundle is empty or not PEM")
	}
	leaf := r.Store.Current().Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: testNames[0], CurrentTime: now}); err != nil {
		t.Fatalf("served certificate does not verify against the published caBundle: %v", err)
	}
}

// TestSelfSignedReplicasAgree starts several replicas at once on an empty
// cluster: they race to create the Secret, and all end up serving the same
// certificate, which verifies against the published caBundle.
func TestSelfSignedReplicasAgree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newFakeCluster(t)
	now := time.Now()
	replicas := []*SelfSigned{newReplica(client, nil), newReplica(client, nil), newReplica(client, nil)}
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for i, r := range replicas {
		if r.Ready() == nil {
			t.Fatal("ready before the first sync")
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.Sync(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	serial := replicas[0].Store.Current().Leaf.SerialNumber
	for i, r := range replicas {
		if err := r.Ready(); err != nil {
			t.Fatalf("replica %d not ready: %v", i, err)
		}
		if got := r.Store.Current().Leaf.SerialNumber; got.Cmp(serial) != 0 {
			t.Fatalf("replica %d serves serial %s, replica 0 serves %s", i, got, serial)
		}
		verifies(t, client, r, now)
	}
	if got := replicas[0].Store.Current().Leaf.DNSNames; len(got) != 2 {
		t.Fatalf("DNS names %v", got)
	}
}

// TestSelfSignedRotation moves the clock: the serving certificate is renewed
// before it expires; the CA is renewed by staging the new CA in the bundle
// first and moving the leaf later; a corrupt Secret is regenerated. At every
// step the served certificate verifies against the published bundle.
func TestSelfSignedRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newFakeCluster(t)
	clock := time.Now()
	r := newReplica(client, func() time.Time { return clock })
	r.CAValidity, r.CertValidity = 300*24*time.Hour, 30*24*time.Hour
	other := newReplica(client, func() time.Time { return clock })
	other.CAValidity, other.CertValidity = r.CAValidity, r.CertValidity

	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	leaf0 := r.Store.Current().Leaf
	ca0, _ := client.secrets().Get(ctx, testSecret, metav1.GetOptions{})

	// Not due: nothing changes.
	clock = clock.Add(10 * 24 * time.Hour)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Store.Current().Leaf.SerialNumber.Cmp(leaf0.SerialNumber) != 0 {
		t.Fatal("renewed a certificate with two thirds of its life left")
	}

	// Leaf due (less than a third left), CA not: new leaf, same CA.
	clock = clock.Add(11 * 24 * time.Hour)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	leaf1 := r.Store.Current().Leaf
	if leaf1.SerialNumber.Cmp(leaf0.SerialNumber) == 0 {
		t.Fatal("leaf not renewed")
	}
	if leaf1.Issuer.String() != leaf0.Issuer.String() || leaf1.AuthorityKeyId == nil || string(leaf1.AuthorityKeyId) != string(leaf0.AuthorityKeyId) {
		t.Fatal("leaf renewal changed the CA")
	}
	verifies(t, client, r, clock)
	// Another replica adopts the renewed leaf from the Secret.
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if other.Store.Current().Leaf.SerialNumber.Cmp(leaf1.SerialNumber) != 0 {
		t.Fatal("other replica did not adopt the renewed certificate")
	}

	// CA due: a new CA is staged next to the old one; the leaf stays for now.
	clock = clock.Add(190 * 24 * time.Hour)
	// Keep the leaf fresh so only the CA is due.
	sec, _ := client.secrets().Get(ctx, testSecret, metav1.GetOptions{})
	ca, err := ParseCA(sec.Data[CAFile], sec.Data[SecretCAKey])
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := ca.Issue(testNames[0], testNames, nil, true, false, clock, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[CertFile], sec.Data[KeyFile] = fresh.CertPEM, fresh.KeyPEM
	if _, err := client.secrets().Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	staged, _ := client.secrets().Get(ctx, testSecret, metav1.GetOptions{})
	if n := countCerts(staged.Data[CAFile]); n != 2 {
		t.Fatalf("bundle holds %d CAs after staging, want old and new", n)
	}
	if string(staged.Data[SecretCAKey]) == string(ca0.Data[SecretCAKey]) {
		t.Fatal("CA key not replaced")
	}
	if string(staged.Data[CertFile]) != string(fresh.CertPEM) {
		t.Fatal("leaf moved to the new CA in the same sync that staged it")
	}
	verifies(t, client, r, clock)

	// Leaf due later: issued by the new CA, which clients already trust.
	clock = clock.Add(21 * 24 * time.Hour)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	newCA, err := ParseCA(staged.Data[CAFile], staged.Data[SecretCAKey])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.Current().Leaf.CheckSignatureFrom(newCA.Cert); err != nil {
		t.Fatalf("renewed leaf not signed by the new CA: %v", err)
	}
	verifies(t, client, r, clock)

	// A corrupt Secret is replaced, not served.
	sec, _ = client.secrets().Get(ctx, testSecret, metav1.GetOptions{})
	sec.Data[KeyFile] = []byte("garbage")
	if _, err := client.secrets().Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	verifies(t, client, r, clock)
}

func TestSelfSignedNeedsWebhookConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := newReplica(newFake(t), nil)
	if err := r.Sync(ctx); err == nil {
		t.Fatal("sync succeeded without the mutatingwebhookconfiguration")
	}
	if err := r.Ready(); err == nil {
		t.Fatal("ready although the caBundle was never written")
	}
}

func countCerts(bundle []byte) int {
	n := 0
	for rest := bundle; ; n++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return n
		}
	}
}

// TestSelfSignedPublishesBothConfigurations: the one server answers the
// MutatingWebhookConfiguration and the ValidatingWebhookConfiguration, so
// both get the same bundle before its certificate is served; a missing
// validating configuration is an error that names it, not a silent skip
// (the API server would fail every validated request against it).
func TestSelfSignedPublishesBothConfigurations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := newFake(t,
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: testMWC},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "pods.podrole.io"}}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: testMWC},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "validate.pods.podrole.io"}}},
	)
	r := newReplica(client, nil)
	r.ValidatingWebhookConfigName = testMWC
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(); err != nil {
		t.Fatal(err)
	}
	verifies(t, client, r, time.Now())
	mwc, err := client.mutatingConfigs().Get(ctx, testMWC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vwc, err := client.validatingConfigs().Get(ctx, testMWC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := vwc.Webhooks[0].ClientConfig.CABundle, mwc.Webhooks[0].ClientConfig.CABundle; countCerts(got) != 1 || string(got) != string(want) {
		t.Fatalf("validating caBundle (%d CAs) differs from the mutating one (%d CAs)", countCerts(got), countCerts(want))
	}

	missing := newReplica(newFakeCluster(t), nil)
	missing.ValidatingWebhookConfigName = testMWC
	if err := missing.Sync(ctx); err == nil || !strings.Contains(err.Error(), `validatingwebhookconfiguration "podrole-webhook"`) {
		t.Fatalf("sync without the validatingwebhookconfiguration: %v", err)
	}
}
