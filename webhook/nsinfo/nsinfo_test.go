package nsinfo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"
)

var enabled = map[string]string{contract.LabelInject: contract.InjectEnabled}

// ns is a namespace as the metadata API serves it: metadata only, the
// API server never sends spec or status to a metadata client.
func ns(name string, labels map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			Annotations:   map[string]string{"iam.amazonaws.com/allowed-roles": `["a"]`},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}, Finalizers: []string{"example.com/keep"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "u"}}}}
}

func newClient(t *testing.T, objs ...runtime.Object) *metadatafake.FakeMetadataClient {
	t.Helper()
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return metadatafake.NewSimpleMetadataClient(scheme, objs...)
}

// namespaceClient is the fake's namespaces, for the tests' own reads and writes.
func namespaceClient(client *metadatafake.FakeMetadataClient) metadatafake.MetadataClient {
	return client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Namespace("").(metadatafake.MetadataClient)
}

// gets counts the GETs of namespaces the client has served.
func gets(client *metadatafake.FakeMetadataClient) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "namespaces" {
			n++
		}
	}
	return n
}

// lookup asks c the way the webhook server does: the cache first, then a
// live read when the cache cannot answer.
func lookup(ctx context.Context, c *Cache, name string) (mutate.Namespace, error) {
	if ns, ok := c.CachedNamespace(name); ok {
		return ns, nil
	}
	return c.Namespace(ctx, name)
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestCache: lookups before the informer has synced read the API; after,
// the cache answers for labelled namespaces and follows label and
// annotation changes; unknown namespaces are an error (the server then
// refuses the pod).
func TestCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := newClient(t, ns("team-a", enabled))
	nsc := namespaceClient(client)
	c := New(client, 0)

	got, err := lookup(ctx, c, "team-a")
	if err != nil || got.Labels[contract.LabelInject] != contract.InjectEnabled || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["a"]` {
		t.Fatalf("before sync (GET): %+v, %v", got, err)
	}
	if c.Synced() {
		t.Fatal("synced before start")
	}
	if _, ok := c.CachedNamespace("team-a"); ok {
		t.Fatal("CachedNamespace answered before the informer started")
	}
	c.Start(ctx)
	waitFor(ctx, t, "the informer to sync", c.Synced)
	before := gets(client)
	if got, ok := c.CachedNamespace("team-a"); !ok || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["a"]` {
		t.Fatalf("CachedNamespace after sync: %+v, %v", got, ok)
	}

	// An annotation change arrives through the watch.
	n, _ := nsc.Get(ctx, "team-a", metav1.GetOptions{})
	n.Annotations = map[string]string{"iam.amazonaws.com/allowed-roles": `["b"]`}
	if _, err := nsc.UpdateFake(n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the annotation change to reach the cache", func() bool {
		got, ok := c.CachedNamespace("team-a")
		return ok && got.Annotations["iam.amazonaws.com/allowed-roles"] == `["b"]`
	})
	if n := gets(client) - before; n != 1 { // the test's own GET before the update, none by the cache
		t.Fatalf("%d GETs while the cache answered", n)
	}

	// Without the label the cache does not answer: the live read does.
	n, _ = nsc.Get(ctx, "team-a", metav1.GetOptions{})
	n.Labels = map[string]string{contract.LabelInject: "disabled"}
	if _, err := nsc.UpdateFake(n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the label removal to reach the cache", func() bool {
		cached, ok := c.cached("team-a")
		return ok && cached.Labels[contract.LabelInject] == "disabled"
	})
	if _, ok := c.CachedNamespace("team-a"); ok {
		t.Fatal("CachedNamespace answered with a namespace the API server would not call the webhook for")
	}
	if got, err := lookup(ctx, c, "team-a"); err != nil || got.Labels[contract.LabelInject] != "disabled" {
		t.Fatalf("live lookup: %+v, %v", got, err)
	}

	if _, ok := c.CachedNamespace("missing"); ok {
		t.Fatal("CachedNamespace answered for a namespace that does not exist")
	}
	cached, ok := c.cached("team-a")
	if !ok || len(cached.ManagedFields) != 0 || len(cached.Finalizers) != 0 || len(cached.OwnerReferences) != 0 {
		t.Fatalf("cache keeps more than name, labels and annotations: %+v %v", cached, ok)
	}
	if _, err := lookup(ctx, c, "missing"); err == nil || !strings.Contains(err.Error(), `get namespace "missing"`) {
		t.Fatalf("missing namespace: %v", err)
	}
}

// TestStaleCacheNeverFailsOpen is the race the API server and the informer
// run: the namespace was just labelled, the API server selected the pod by
// that label, and the informer still holds the unlabelled copy (with the
// old allow-list). The webhook must not skip the pod on the stale copy; it
// must read the namespace live, or refuse when it cannot.
func TestStaleCacheNeverFailsOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live := ns("team-a", enabled)
	live.Annotations = map[string]string{"iam.amazonaws.com/allowed-roles": `["app"]`}
	client := newClient(t, live)
	c := New(client, 0)
	stale := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "team-a", ResourceVersion: "1"}}
	if err := c.informer.GetIndexer().Add(stale); err != nil {
		t.Fatal(err)
	}

	if got, ok := c.CachedNamespace("team-a"); ok {
		t.Fatalf("CachedNamespace answered with the stale, unlabelled copy: %+v", got)
	}
	got, err := lookup(ctx, c, "team-a")
	if err != nil || got.Labels[contract.LabelInject] != contract.InjectEnabled || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["app"]` {
		t.Fatalf("lookup: %+v, %v; want the live, labelled namespace", got, err)
	}
	if gets(client) != 1 {
		t.Fatalf("%d GETs, want the one live read", gets(client))
	}

	// What the stale copy would have done: mutate skips the pod. The live
	// copy gets it checked and injected.
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pod := func(role string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team-a", Annotations: map[string]string{contract.AnnotationRole: role}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	}
	if res := mutate.Mutate(pod("app"), convert(stale), cfg); res.Outcome != mutate.Skipped {
		t.Fatalf("stale copy: outcome %q, want skipped (the hole this test guards)", res.Outcome)
	}
	if res := mutate.Mutate(pod("app"), got, cfg); res.Outcome != mutate.Injected {
		t.Fatalf("live copy: outcome %q (%s), want injected", res.Outcome, res.Message)
	}
	if res := mutate.Mutate(pod("admin"), got, cfg); res.Outcome != mutate.Denied {
		t.Fatalf("live copy, role outside the allow-list: outcome %q, want denied", res.Outcome)
	}

	// The API server cannot be read: an error, which the server turns into
	// a refusal; never the cached copy.
	client.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if got, err := lookup(ctx, c, "team-a"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("lookup with the API down: %+v, %v; want an error", got, err)
	}
}

// TestNamespaceIsLive: Namespace never answers from the cache, even when the
// cache holds a labelled copy: it is the "cache could not answer" path.
func TestNamespaceIsLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live := ns("team-a", enabled)
	live.Annotations = map[string]string{"iam.amazonaws.com/allowed-roles": `["new"]`}
	client := newClient(t, live)
	c := New(client, 0)
	old := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: enabled,
		Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": `["old"]`}}}
	if err := c.informer.GetIndexer().Add(old); err != nil {
		t.Fatal(err)
	}
	got, err := c.Namespace(ctx, "team-a")
	if err != nil || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["new"]` || gets(client) != 1 {
		t.Fatalf("Namespace: %+v, %v, %d GETs; want the live copy", got, err, gets(client))
	}
	if err := namespaceClient(client).Delete(ctx, "team-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Namespace(ctx, "team-a"); err == nil {
		t.Fatalf("Namespace of a deleted namespace answered %+v from the cache", got)
	}
}
