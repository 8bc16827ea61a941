// Package nsinfo answers "what are this namespace's labels and annotations"
// for the admission path from a client-go informer cache, falling back to a
// GET for namespaces the cache has not seen yet (created a moment ago).
//
// It never fails open. The API server calls the webhook only for pods in
// namespaces labelled podrole.io/inject=enabled (the configuration's
// namespaceSelector), so a cached copy without that label is stale by
// definition (the label was just added and the watch has not delivered it):
// CachedNamespace does not answer with it, and Namespace always reads the
// namespace from the API server. A failed read is an error, which the server
// turns into a refusal.
//
// Namespaces are read through client-go's metadata client
// (PartialObjectMetadata: name, labels, annotations; never spec or status),
// not the typed clientset: only labels and annotations are needed, and
// linking k8s.io/client-go/kubernetes (every API group's client, informer
// and apply configuration) costs the webhook about 15 MiB of resident
// executable pages.
package nsinfo

import (
	"context"
	"fmt"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
)

// Cache looks namespaces up. Create it with New, then Start it.
type Cache struct {
	client   metadata.ResourceInterface
	informer cache.SharedIndexInformer
}

// New builds a namespace cache on client. resync is the informer's resync
// period (0: none; the watch keeps it current).
//
// One informer built directly, as metadatainformer.NewFilteredMetadataInformer
// builds it, not through that package: it imports k8s.io/client-go/informers,
// which links the typed clientset this package avoids.
func New(client metadata.Interface, resync time.Duration) *Cache {
	nsc := client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Namespace("")
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nsc.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nsc.Watch(ctx, o)
		},
	}
	// As client-go's informers do: a client that cannot stream the initial
	// list (a fake) then gets a plain list and watch.
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), &metav1.PartialObjectMetadata{}, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync, Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
	})
	// Only labels and annotations are read: keep nothing else (managed
	// fields, finalizers, owner references), so the cache stays small on
	// clusters with many namespaces. Before Start, SetTransform cannot fail.
	_ = inf.SetTransform(slim)
	return &Cache{client: nsc, informer: inf}
}

// Start runs the informer until ctx is done. It does not wait for the sync:
// readiness reports that (Synced).
func (c *Cache) Start(ctx context.Context) {
	go c.informer.RunWithContext(ctx)
}

// Synced reports whether the initial list has been loaded.
func (c *Cache) Synced() bool { return c.informer.HasSynced() }

// Namespace returns name's labels and annotations as the API server has
// them now: it always reads the namespace live (GET), never from the cache,
// because it is asked exactly when the cache could not answer (see
// CachedNamespace). An error (namespace not found, API unreachable) refuses
// the pod.
func (c *Cache) Namespace(ctx context.Context, name string) (mutate.Namespace, error) {
	ns, err := c.client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return mutate.Namespace{}, fmt.Errorf("get namespace %q: %w", name, err)
	}
	return convert(ns), nil
}

// CachedNamespace returns name from the cache only. ok is false, and
// Namespace must be asked, when the cache does not have it, cannot be read,
// or has a copy without the label podrole.io/inject=enabled: the API server
// sends the webhook only pods of labelled namespaces, so such a copy is
// older than the label and its annotations (the allow-lists) may be too.
func (c *Cache) CachedNamespace(name string) (mutate.Namespace, bool) {
	ns, ok := c.cached(name)
	if !ok || ns.Labels[contract.LabelInject] != contract.InjectEnabled {
		return mutate.Namespace{}, false
	}
	return convert(ns), true
}

// cached is the cache's copy of namespace name, if it has one.
func (c *Cache) cached(name string) (*metav1.PartialObjectMetadata, bool) {
	obj, exists, err := c.informer.GetIndexer().GetByKey(name) // cluster-scoped: the key is the name
	if err != nil || !exists {
		return nil, false
	}
	ns, ok := obj.(*metav1.PartialObjectMetadata)
	return ns, ok
}

// slim keeps of a namespace what lookups and the informer use: name, UID,
// resource version, labels and annotations. Anything else (a tombstone)
// passes unchanged.
func slim(obj any) (any, error) {
	ns, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels, Annotations: ns.Annotations,
	}}, nil
}

func convert(ns *metav1.PartialObjectMetadata) mutate.Namespace {
	return mutate.Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations}
}
