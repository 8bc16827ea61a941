package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8stesting "k8s.io/client-go/testing"
)

func publishedBundle(t *testing.T, client fakeCluster) []byte {
	t.Helper()
	mwc, err := client.mutatingConfigs().Get(context.Background(), testMWC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return mwc.Webhooks[0].ClientConfig.CABundle
}

// verifiesAgainst reports whether leaf chains to bundle for the Service name
// at now, as the API server checks it.
func verifiesAgainst(leaf *x509.Certificate, bundle []byte, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: testNames[0], CurrentTime: now})
	return err
}

// TestSelfSignedForcedRotationOverlap is scenario 8c in a fake cluster: a
// replica serves CA A's certificate, an operator deletes the Secret, a new
// replica makes CA B. While the old replica has not resynced, its
// certificate must still verify against the published caBundle; the new
// CA must be in the bundle before the Secret holding its certificate exists;
// the old replica then moves to B; once A expires it leaves the bundle.
func TestSelfSignedForcedRotationOverlap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newFakeCluster(t)
	clock := time.Now()
	now := func() time.Time { return clock }
	old := newReplica(client, now)
	old.CAValidity, old.CertValidity = 30*24*time.Hour, 10*24*time.Hour
	if err := old.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	leafA := old.Store.Current().Leaf
	if err := verifiesAgainst(leafA, publishedBundle(t, client), clock); err != nil {
		t.Fatalf("first certificate: %v", err)
	}

	if err := client.deleteSecret(ctx, testSecret); err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	clock = clock.Add(time.Hour)
	fresh := newReplica(client, now)
	if err := fresh.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	leafB := fresh.Store.Current().Leaf
	if bytes.Equal(leafB.AuthorityKeyId, leafA.AuthorityKeyId) {
		t.Fatal("deleting the Secret did not produce a new CA")
	}
	bundle := publishedBundle(t, client)
	if n := countCerts(bundle); n != 2 {
		t.Fatalf("caBundle holds %d CAs during the overlap, want the new and the old", n)
	}
	// The old replica has not synced yet: the API server must still accept it.
	if err := verifiesAgainst(old.Store.Current().Leaf, bundle, clock); err != nil {
		t.Fatalf("old replica's certificate rejected during the overlap (the failure of 8c): %v", err)
	}
	if err := verifiesAgainst(leafB, bundle, clock); err != nil {
		t.Fatalf("new certificate rejected: %v", err)
	}

	// Make before break: the caBundle trusted B before the Secret with B's
	// certificate was created.
	trustedAt, createdAt := -1, -1
	for i, a := range client.Actions() {
		switch a.GetVerb() + " " + a.GetResource().Resource {
		case "update mutatingwebhookconfigurations":
			mwc, err := client.mutatingConfigs().fromUnstructured(a.(k8stesting.UpdateAction).GetObject().(*unstructured.Unstructured))
			if err != nil {
				t.Fatal(err)
			}
			if trustedAt < 0 && verifiesAgainst(leafB, mwc.Webhooks[0].ClientConfig.CABundle, clock) == nil {
				trustedAt = i
			}
		case "create secrets":
			if createdAt < 0 {
				createdAt = i
			}
		}
	}
	if trustedAt < 0 || createdAt < 0 || trustedAt > createdAt {
		t.Fatalf("caBundle with the new CA published at action %d, Secret created at %d: the Secret must come second", trustedAt, createdAt)
	}

	// The old replica catches up and serves B; nothing is republished.
	if err := old.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if old.Store.Current().Leaf.SerialNumber.Cmp(leafB.SerialNumber) != 0 {
		t.Fatal("old replica did not adopt the new certificate")
	}
	if !bytes.Equal(publishedBundle(t, client), bundle) {
		t.Fatal("caBundle changed when the old replica adopted the Secret")
	}

	// A expires (30 days); B, made an hour later, has not: A is dropped.
	caA := parseBundle(bundle)[1]
	clock = caA.NotAfter.Add(time.Second)
	if err := fresh.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	after := publishedBundle(t, client)
	for _, c := range parseBundle(after) {
		if bytes.Equal(c.Raw, caA.Raw) {
			t.Fatal("expired CA still published")
		}
	}
	if err := verifiesAgainst(fresh.Store.Current().Leaf, after, clock); err != nil {
		t.Fatalf("served certificate after the old CA expired: %v", err)
	}
}

// TestSelfSignedRaceWithdrawsLosersCA: two replicas both find no Secret; the
// one whose create loses must not leave its never-used CA in the bundle.
func TestSelfSignedRaceWithdrawsLosersCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newFakeCluster(t)
	a, b := newReplica(client, nil), newReplica(client, nil)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// b's Get ran before a's create: it goes on to create, having published
	// its own CA first, and finds a's Secret.
	sec, _ := client.secrets().Get(ctx, testSecret, metav1.GetOptions{})
	if _, err := b.create(ctx); err != nil {
		t.Fatal(err)
	}
	bundle := publishedBundle(t, client)
	if n := countCerts(bundle); n != 1 {
		t.Fatalf("caBundle holds %d CAs after a lost create race, want only the winner's", n)
	}
	if !bytes.Equal(bundle, sec.Data[CAFile]) {
		t.Fatal("caBundle is not the winner's CA")
	}
}

// TestSelfSignedRunFollowsSecret: a running replica sees the Secret deleted
// and serves the recreated certificate without waiting for its interval.
func TestSelfSignedRunFollowsSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newFakeCluster(t)
	r := newReplica(client, nil)
	go r.Run(ctx, time.Hour)
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitUntil("first certificate", func() bool { return r.Ready() == nil })
	first := r.Store.Current().Leaf
	if err := client.deleteSecret(ctx, testSecret); err != nil {
		t.Fatal(err)
	}
	waitUntil("a new certificate after the Secret was deleted", func() bool {
		return r.Store.Current().Leaf.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if err := verifiesAgainst(first, publishedBundle(t, client), time.Now()); err != nil {
		t.Fatalf("previous certificate no longer trusted right after the rotation: %v", err)
	}
	verifies(t, client, r, time.Now())
}

func TestMergeBundles(t *testing.T) {
	now := time.Now()
	mk := func(validity time.Duration) *CA {
		ca, err := NewCA("ca", now.Add(-time.Hour), validity)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	a, b, c, expired := mk(48*time.Hour), mk(48*time.Hour), mk(48*time.Hour), mk(30*time.Minute)
	cat := func(cas ...*CA) []byte {
		var out []byte
		for _, ca := range cas {
			out = append(out, ca.CertPEM...)
		}
		return out
	}
	many := make([]*CA, MaxBundleCAs+2)
	for i := range many {
		many[i] = mk(48 * time.Hour)
	}
	for _, tc := range []struct {
		name            string
		next, published []byte
		want            []byte
	}{
		{"first publish", cat(a), nil, cat(a)},
		{"placeholder replaced", cat(a), []byte("REPLACE-ME"), cat(a)},
		{"new CA first, old kept", cat(b), cat(a), cat(b, a)},
		{"deduped", cat(b, a), cat(a, b), cat(b, a)},
		{"expired dropped from both", cat(c, expired), cat(b, expired, a), cat(c, b, a)},
		{"bounded, newest kept", cat(many[0]), cat(many[1:]...), cat(many[:MaxBundleCAs]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MergeBundles(tc.next, tc.published, now); !bytes.Equal(got, tc.want) {
				t.Fatalf("got %d CAs, want %d (or wrong order)", countCerts(got), countCerts(tc.want))
			}
		})
	}
}
