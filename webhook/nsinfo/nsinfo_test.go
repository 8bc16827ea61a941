package nsinfo

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
		Annotations:   map[string]string{"iam.amazonaws.com/allowed-roles": `["a"]`},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}, Finalizers: []string{"example.com/keep"}},
		Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
}

// TestCache: lookups before the informer has synced fall back to a GET;
// after, the cache answers and follows label changes; unknown namespaces are
// an error (the server then refuses the pod).
func TestCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := fake.NewClientset(ns("team-a", map[string]string{"podrole.io/inject": "enabled"}))
	c := New(client, 0)

	got, err := c.Namespace(ctx, "team-a")
	if err != nil || got.Labels["podrole.io/inject"] != "enabled" || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["a"]` {
		t.Fatalf("before sync (GET fallback): %+v, %v", got, err)
	}
	if c.Synced() {
		t.Fatal("synced before start")
	}
	if _, ok := c.CachedNamespace("team-a"); ok {
		t.Fatal("CachedNamespace answered before the informer started")
	}
	c.Start(ctx)
	for !c.Synced() {
		select {
		case <-ctx.Done():
			t.Fatal("informer never synced")
		case <-time.After(10 * time.Millisecond):
		}
	}

	// Label change arrives through the watch.
	n, _ := client.CoreV1().Namespaces().Get(ctx, "team-a", metav1.GetOptions{})
	n.Labels = map[string]string{"podrole.io/inject": "disabled"}
	if _, err := client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := c.Namespace(ctx, "team-a")
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["podrole.io/inject"] == "disabled" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("label change never reached the cache")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got, ok := c.CachedNamespace("team-a"); !ok || got.Labels["podrole.io/inject"] != "disabled" || got.Annotations["iam.amazonaws.com/allowed-roles"] != `["a"]` {
		t.Fatalf("CachedNamespace after sync: %+v, %v", got, ok)
	}
	if _, ok := c.CachedNamespace("missing"); ok {
		t.Fatal("CachedNamespace answered for a namespace that does not exist")
	}
	cached, err := c.lister.Get("team-a")
	if err != nil || len(cached.ManagedFields) != 0 || len(cached.Finalizers) != 0 || len(cached.Spec.Finalizers) != 0 || cached.Status.Phase != "" {
		t.Fatalf("cache keeps more than name, labels and annotations: %+v %v", cached, err)
	}

	if _, err := c.Namespace(ctx, "missing"); err == nil || !strings.Contains(err.Error(), `get namespace "missing"`) {
		t.Fatalf("missing namespace: %v", err)
	}
}
