package certs

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestCABundles: caBundles and setCABundles edit only
// webhooks[].clientConfig.caBundle of a webhook configuration read as
// unstructured: every other field (also one this build's k8s.io/api does
// not know) is written back as read, and a malformed configuration is an
// error, never a silent rewrite.
func TestCABundles(t *testing.T) {
	pemA, pemB := []byte("-----BEGIN CERTIFICATE-----\nA\n"), []byte("-----BEGIN CERTIFICATE-----\nB\n")
	b64 := base64.StdEncoding.EncodeToString
	webhook := func(name string, clientConfig map[string]any) map[string]any {
		return map[string]any{"name": name, "sideEffects": "None", "futureField": "kept", "clientConfig": clientConfig}
	}
	tests := []struct {
		name     string
		webhooks []any
		want     [][]byte // what caBundles returns
		err      string
		set      [][]byte // written with setCABundles, then read back
	}{
		{name: "two webhooks", webhooks: []any{
			webhook("a", map[string]any{"caBundle": b64(pemA), "service": map[string]any{"name": "svc"}}),
			webhook("b", map[string]any{"url": "https://x/validate"}),
		}, want: [][]byte{pemA, {}}, set: [][]byte{pemB, pemA}},
		{name: "no webhooks", webhooks: nil, want: [][]byte{}, set: [][]byte{}},
		{name: "caBundle not base64", webhooks: []any{webhook("a", map[string]any{"caBundle": "%%%"})}, err: "webhooks[0].clientConfig.caBundle"},
		{name: "caBundle not a string", webhooks: []any{webhook("a", map[string]any{"caBundle": int64(1)})}, err: "webhooks[0].clientConfig.caBundle"},
		{name: "webhook not an object", webhooks: []any{"a"}, err: "webhooks[0] is not an object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "admissionregistration.k8s.io/v1",
				"kind": "MutatingWebhookConfiguration", "metadata": map[string]any{"name": "podrole-webhook"}}}
			if tc.webhooks != nil {
				u.Object["webhooks"] = tc.webhooks
			}
			got, err := caBundles(u)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("caBundles: %v, want an error about %s", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("caBundles: %q, %v; want %q", got, err, tc.want)
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("caBundles[%d] = %q, want %q", i, got[i], tc.want[i])
				}
			}
			before := u.DeepCopy()
			if err := setCABundles(u, tc.set); err != nil {
				t.Fatal(err)
			}
			if got, err := caBundles(u); err != nil || len(got) != len(tc.set) {
				t.Fatalf("read back: %q, %v", got, err)
			} else {
				for i := range got {
					if !bytes.Equal(got[i], tc.set[i]) {
						t.Fatalf("read back [%d] = %q, want %q", i, got[i], tc.set[i])
					}
				}
			}
			// Everything but the caBundles is as it was.
			webhooks, _ := before.Object["webhooks"].([]any)
			for i, w := range webhooks {
				_ = unstructured.SetNestedField(w.(map[string]any), b64(tc.set[i]), "clientConfig", "caBundle")
			}
			if !equalJSON(t, before, u) {
				t.Fatalf("setCABundles changed more than the caBundles:\n%v\n%v", before.Object, u.Object)
			}
			if err := setCABundles(u, append(tc.set, pemA)); err == nil {
				t.Fatal("setCABundles took more bundles than webhooks")
			}
		})
	}
}

func equalJSON(t *testing.T, a, b *unstructured.Unstructured) bool {
	t.Helper()
	ja, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	jb, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
