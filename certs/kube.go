package certs

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// The self-signed mode reads and writes three kinds of object: its Secret
// and the two webhook configurations. It does so through client-go's
// dynamic client, converting to and from the typed structs of k8s.io/api
// here, at the boundary, and not through the typed clientset
// (k8s.io/client-go/kubernetes): that links every API group's client,
// informer and apply configuration, which cost the webhook about 15 MiB of
// resident executable pages (README "Performance").

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

func (s *SelfSigned) mutatingConfigs() typed[admissionregistrationv1.MutatingWebhookConfiguration] {
	gv := admissionregistrationv1.SchemeGroupVersion
	return typed[admissionregistrationv1.MutatingWebhookConfiguration]{
		ri: s.Client.Resource(gv.WithResource("mutatingwebhookconfigurations")), gvk: gv.WithKind("MutatingWebhookConfiguration"),
	}
}

func (s *SelfSigned) validatingConfigs() typed[admissionregistrationv1.ValidatingWebhookConfiguration] {
	gv := admissionregistrationv1.SchemeGroupVersion
	return typed[admissionregistrationv1.ValidatingWebhookConfiguration]{
		ri: s.Client.Resource(gv.WithResource("validatingwebhookconfigurations")), gvk: gv.WithKind("ValidatingWebhookConfiguration"),
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
