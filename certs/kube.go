package certs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// The self-signed mode reads and writes three objects: its Secret and the
// two webhook configurations. It does so through client-go's dynamic
// client, not the typed clientset (k8s.io/client-go/kubernetes): that
// links every API group's client, informer and apply configuration, which
// cost the webhook about 15 MiB of resident executable pages (README
// "Performance"). Measured on the webhook binary (go1.26, -s -w): typed
// clientset 30.7 MB; REST client with a scheme of core/v1 and
// admissionregistration/v1 18.88 MB; dynamic client with the typed
// webhook configurations 18.98 MB; dynamic client editing the
// configurations' caBundles in place 18.51 MB, kept: it does not link
// k8s.io/api/admissionregistration/v1, and it keeps every field of the
// configurations as the API server sent it, including fields newer than
// the k8s.io/api this is built with, which a typed round trip would drop.

// typed is one kind of object of k8s.io/api (T) read and written through
// the dynamic client, with the typed clientset's method signatures.
type typed[T any] struct {
	ri dynamic.ResourceInterface
	// gvk is set on every object written: the API server needs apiVersion
	// and kind, and a typed struct built in code has neither.
	gvk schema.GroupVersionKind
}

func (s *SelfSigned) secrets() typed[corev1.Secret] {
	return typed[corev1.Secret]{
		ri:  s.Client.Resource(corev1.SchemeGroupVersion.WithResource("secrets")).Namespace(s.SecretNamespace),
		gvk: corev1.SchemeGroupVersion.WithKind("Secret"),
	}
}

// Get reads name. API errors come back unwrapped, so apierrors.IsNotFound
// and retry.RetryOnConflict see them as the typed clientset's.
func (c typed[T]) Get(ctx context.Context, name string, o metav1.GetOptions) (*T, error) {
	u, err := c.ri.Get(ctx, name, o)
	if err != nil {
		return nil, err
	}
	return c.fromUnstructured(u)
}

// Create creates obj and returns what the API server stored.
func (c typed[T]) Create(ctx context.Context, obj *T, o metav1.CreateOptions) (*T, error) {
	u, err := c.toUnstructured(obj)
	if err != nil {
		return nil, err
	}
	if u, err = c.ri.Create(ctx, u, o); err != nil {
		return nil, err
	}
	return c.fromUnstructured(u)
}

// Update writes obj (a compare-and-swap on its resourceVersion) and returns
// what the API server stored.
func (c typed[T]) Update(ctx context.Context, obj *T, o metav1.UpdateOptions) (*T, error) {
	u, err := c.toUnstructured(obj)
	if err != nil {
		return nil, err
	}
	if u, err = c.ri.Update(ctx, u, o); err != nil {
		return nil, err
	}
	return c.fromUnstructured(u)
}

func (c typed[T]) toUnstructured(obj *T) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %s to unstructured: %w", c.gvk.Kind, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(c.gvk)
	return u, nil
}

func (c typed[T]) fromUnstructured(u *unstructured.Unstructured) (*T, error) {
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), out); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", c.gvk.Kind, u.GetName(), err)
	}
	return out, nil
}

// webhookConfigs is the mutating or the validating webhook configurations,
// of which only webhooks[].clientConfig.caBundle is read and written.
type webhookConfigs struct {
	ri   dynamic.ResourceInterface
	kind string // for messages: mutatingwebhookconfiguration
}

func (s *SelfSigned) mutatingConfigs() webhookConfigs {
	return webhookConfigs{ri: s.Client.Resource(webhookConfigResource("mutatingwebhookconfigurations")), kind: "mutatingwebhookconfiguration"}
}

func (s *SelfSigned) validatingConfigs() webhookConfigs {
	return webhookConfigs{ri: s.Client.Resource(webhookConfigResource("validatingwebhookconfigurations")), kind: "validatingwebhookconfiguration"}
}

func webhookConfigResource(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: resource}
}

// caBundles returns the decoded caBundle of each webhook of a webhook
// configuration, in order; nil for a webhook without one.
func caBundles(u *unstructured.Unstructured) ([][]byte, error) {
	webhooks, _, err := unstructured.NestedSlice(u.Object, "webhooks")
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(webhooks))
	for i, w := range webhooks {
		m, ok := w.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("webhooks[%d] is not an object", i)
		}
		// caBundle is []byte in the API: base64 in JSON.
		s, _, err := unstructured.NestedString(m, "clientConfig", "caBundle")
		if err != nil {
			return nil, fmt.Errorf("webhooks[%d].clientConfig.caBundle: %w", i, err)
		}
		if out[i], err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("webhooks[%d].clientConfig.caBundle: %w", i, err)
		}
	}
	return out, nil
}

// setCABundles sets the caBundle of each webhook of a webhook configuration
// to bundles (one per webhook, as caBundles returned them), leaving every
// other field as it is.
func setCABundles(u *unstructured.Unstructured, bundles [][]byte) error {
	// A deep copy: written back below.
	webhooks, _, err := unstructured.NestedSlice(u.Object, "webhooks")
	if err != nil {
		return err
	}
	if len(webhooks) != len(bundles) {
		return errors.New("webhooks changed while their caBundles were edited")
	}
	if len(webhooks) == 0 {
		return nil // nothing to set; do not add an empty list
	}
	for i, w := range webhooks {
		m, ok := w.(map[string]any)
		if !ok {
			return fmt.Errorf("webhooks[%d] is not an object", i)
		}
		if err := unstructured.SetNestedField(m, base64.StdEncoding.EncodeToString(bundles[i]), "clientConfig", "caBundle"); err != nil {
			return fmt.Errorf("webhooks[%d].clientConfig.caBundle: %w", i, err)
		}
	}
	return unstructured.SetNestedSlice(u.Object, webhooks, "webhooks")
}
