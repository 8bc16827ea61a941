// Package nsinfo answers "what are this namespace's labels and annotations"
// for the admission path from a client-go informer cache, falling back to a
// GET for namespaces the cache has not seen yet (created a moment ago).
package nsinfo

import (
	"context"
	"fmt"
	"time"

	"github.com/podrole/podrole/webhook/mutate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Cache looks namespaces up. Create it with New, then Start it.
type Cache struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   listersv1.NamespaceLister
}

// New builds a namespace cache on client. resync is the informer's resync
// period (0: none; the watch keeps it current).
func New(client kubernetes.Interface, resync time.Duration) *Cache {
	f := informers.NewSharedInformerFactoryWithOptions(client, resync,
		// Only labels and annotations are read: drop managed fields to keep
		// the cache small on clusters with many namespaces.
		informers.WithTransform(stripManagedFields))
	nsi := f.Core().V1().Namespaces()
	inf := nsi.Informer()
	return &Cache{client: client, factory: f, informer: inf, lister: nsi.Lister()}
}

// Start runs the informer until ctx is done. It does not wait for the sync:
// readiness reports that (Synced).
func (c *Cache) Start(ctx context.Context) {
	c.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		c.factory.Shutdown()
	}()
}

// Synced reports whether the initial list has been loaded.
func (c *Cache) Synced() bool { return c.informer.HasSynced() }

// Namespace returns name's labels and annotations, from the cache or, when
// the cache does not have it yet, from the API server.
func (c *Cache) Namespace(ctx context.Context, name string) (mutate.Namespace, error) {
	ns, err := c.lister.Get(name)
	if err == nil {
		return convert(ns), nil
	}
	if !apierrors.IsNotFound(err) {
		return mutate.Namespace{}, fmt.Errorf("read namespace %q from cache: %w", name, err)
	}
	ns, err = c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return mutate.Namespace{}, fmt.Errorf("get namespace %q: %w", name, err)
	}
	return convert(ns), nil
}

func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

func convert(ns *corev1.Namespace) mutate.Namespace {
	return mutate.Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations}
}
