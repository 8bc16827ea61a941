package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// namespaces is an in-memory NamespaceGetter.
type namespaces map[string]mutate.Namespace

func (n namespaces) Namespace(_ context.Context, name string) (mutate.Namespace, error) {
	ns, ok := n[name]
	if !ok {
		return mutate.Namespace{}, fmt.Errorf("namespace %q not found", name)
	}
	return ns, nil
}

func testNamespaces() namespaces {
	on := map[string]string{contract.LabelInject: contract.InjectEnabled}
	return namespaces{
		"team-a":  {Name: "team-a", Labels: on},
		"plain":   {Name: "plain"},
		"limited": {Name: "limited", Labels: on, Annotations: map[string]string{contract.AnnotationAllowedRoles: `["web"]`}},
	}
}

func newTestServer(t testing.TB, ready ...Check) (*Server, *prometheus.Registry) {
	t.Helper()
	return newTestServerWith(t, nil, ready...)
}

// newTestServerWith is newTestServer with mod applied to the configuration.
func newTestServerWith(t testing.TB, mod func(*mutate.Config), ready ...Check) (*Server, *prometheus.Registry) {
	t.Helper()
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Config: cfg, Namespaces: testNamespaces(), Logger: slog.New(slog.DiscardHandler), Registry: reg, Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func podJSON(ns string, annotations map[string]string) []byte {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	b, _ := json.Marshal(&pod)
	return b
}

func reviewJSON(uid, ns string, op admissionv1.Operation, kind string, object []byte) []byte {
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid), Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: strings.ToLower(kind) + "s"},
			Namespace: ns, Operation: op, Object: runtime.RawExtension{Raw: object},
		},
	}
	b, _ := json.Marshal(&r)
	return b
}

func post(h http.Handler, body []byte, contentType string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestMutateHTTP covers what the API server (or a stray client) can send and
// what it gets back: never a panic, 400 for garbage, an AdmissionReview with
// the request's UID otherwise.
func TestMutateHTTP(t *testing.T) {
	role := map[string]string{contract.AnnotationRole: "app"}
	tests := []struct {
		name        string
		body        []byte
		contentType string
		wantStatus  int
		wantBody    string // substring of a non-200 body
		allowed     bool
		patched     bool
		message     string // substring of Result.Message
		result      string // metrics label counted
	}{
		{name: "inject", body: reviewJSON("u1", "team-a", admissionv1.Create, "Pod", podJSON("team-a", role)), wantStatus: 200, allowed: true, patched: true, result: "injected"},
		{name: "namespace from request when pod has none", body: reviewJSON("u1", "team-a", admissionv1.Create, "Pod", podJSON("", role)), wantStatus: 200, allowed: true, patched: true, result: "injected"},
		{name: "block", body: reviewJSON("u2", "team-a", admissionv1.Create, "Pod", podJSON("team-a", nil)), wantStatus: 200, allowed: true, patched: true, result: "blocked"},
		{name: "unlabelled namespace", body: reviewJSON("u3", "plain", admissionv1.Create, "Pod", podJSON("plain", role)), wantStatus: 200, allowed: true, result: "skipped"},
		{name: "denied", body: reviewJSON("u4", "limited", admissionv1.Create, "Pod", podJSON("limited", role)), wantStatus: 200, message: `role "app" is not allowed in namespace "limited"`, result: "denied"},
		{name: "namespace lookup fails closed", body: reviewJSON("u5", "gone", admissionv1.Create, "Pod", podJSON("gone", role)), wantStatus: 200, message: `cannot look up namespace "gone"`, result: "error"},
		{name: "update is not ours", body: reviewJSON("u6", "team-a", admissionv1.Update, "Pod", podJSON("team-a", role)), wantStatus: 200, allowed: true, result: "skipped"},
		{name: "other kind is not ours", body: reviewJSON("u7", "team-a", admissionv1.Create, "ConfigMap", []byte(`{}`)), wantStatus: 200, allowed: true, result: "skipped"},
		{name: "pod that does not decode", body: reviewJSON("u8", "team-a", admissionv1.Create, "Pod", []byte(`{"spec":{"containers":"nope"}}`)), wantStatus: 200, message: "cannot decode the pod", result: "error"},
		{name: "empty body", body: nil, contentType: "application/json", wantStatus: 400, wantBody: "empty request body", result: "error"},
		{name: "bad json", body: []byte(`{"apiVersion":`), contentType: "application/json", wantStatus: 400, wantBody: "decode AdmissionReview", result: "error"},
		{name: "wrong kind", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"x"}}`), contentType: "application/json", wantStatus: 400, wantBody: "want apiVersion admission.k8s.io/v1 kind AdmissionReview", result: "error"},
		{name: "v1beta1 review", body: []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), contentType: "application/json", wantStatus: 400, wantBody: "admissionReviewVersions", result: "error"},
		{name: "no request", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), contentType: "application/json", wantStatus: 400, wantBody: "no request", result: "error"},
		{name: "no uid", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), contentType: "application/json", wantStatus: 400, wantBody: "no uid", result: "error"},
		{name: "wrong content type", body: reviewJSON("u9", "team-a", admissionv1.Create, "Pod", podJSON("team-a", role)), contentType: "text/plain", wantStatus: 415, result: "error"},
		{name: "oversized", body: bytes.Repeat([]byte(" "), MaxReviewBytes+1), contentType: "application/json", wantStatus: 400, wantBody: "larger than", result: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, reg := newTestServer(t)
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			rec := post(s.Handler(), tt.body, ct)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if got := testutil.ToFloat64(s.admissions.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("admissions{result=%q} = %v, want 1", tt.result, got)
			}
			if n, err := testutil.GatherAndCount(reg, "podrole_webhook_admission_duration_seconds"); err != nil || n != 1 {
				t.Errorf("latency histogram: %d series, %v", n, err)
			}
			if rec.Code != 200 {
				if !strings.Contains(rec.Body.String(), tt.wantBody) {
					t.Fatalf("body %q does not contain %q", rec.Body.String(), tt.wantBody)
				}
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("response is not an AdmissionReview: %v", err)
			}
			var in admissionv1.AdmissionReview
			_ = json.Unmarshal(tt.body, &in)
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
				t.Fatalf("bad response %s", rec.Body.String())
			}
			if out.Response.UID != in.Request.UID {
				t.Errorf("uid %q, want %q echoed", out.Response.UID, in.Request.UID)
			}
			if out.Response.Allowed != tt.allowed {
				t.Errorf("allowed %v, want %v (%+v)", out.Response.Allowed, tt.allowed, out.Response.Result)
			}
			if tt.patched != (len(out.Response.Patch) > 0) {
				t.Errorf("patch %s, want patched=%v", out.Response.Patch, tt.patched)
			}
			if tt.patched && (out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch) {
				t.Errorf("patchType %v", out.Response.PatchType)
			}
			if tt.message != "" {
				if out.Response.Result == nil || !strings.Contains(out.Response.Result.Message, tt.message) {
					t.Errorf("result %+v does not contain %q", out.Response.Result, tt.message)
				}
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	certErr := errors.New("no certificate loaded yet")
	s, _ := newTestServer(t, Check{Name: "certificate", Ready: func() error { return certErr }})
	for _, h := range []http.Handler{s.Handler(), s.HealthHandler()} {
		get := func(path string) (int, string) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			b, _ := io.ReadAll(rec.Body)
			return rec.Code, string(b)
		}
		certErr = errors.New("no certificate loaded yet")
		if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "certificate: no certificate loaded yet") {
			t.Errorf("/readyz not ready: %d %q", code, body)
		}
		if code, _ := get("/healthz"); code != 200 {
			t.Errorf("/healthz %d", code)
		}
		certErr = nil
		if code, _ := get("/readyz"); code != 200 {
			t.Errorf("/readyz ready: %d", code)
		}
		if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `podrole_webhook_admissions_total{result="denied"} 0`) {
			t.Errorf("/metrics %d:\n%s", code, body)
		}
	}
	rec := httptest.NewRecorder()
	s.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", nil))
	if rec.Code != 404 {
		t.Errorf("health listener serves /mutate: %d", rec.Code)
	}
}

// FuzzDecodeReview throws arbitrary bodies at /mutate: the handler must not
// panic, must answer 200 with an AdmissionReview echoing the UID, or a 4xx.
func FuzzDecodeReview(f *testing.F) {
	f.Add(reviewJSON("seed", "team-a", admissionv1.Create, "Pod", podJSON("team-a", map[string]string{contract.AnnotationRole: "app"})))
	f.Add(reviewJSON("seed", "team-a", admissionv1.Create, "Pod", podJSON("team-a", nil)))
	f.Add(reviewJSON("seed", "limited", admissionv1.Create, "Pod", podJSON("limited", map[string]string{contract.AnnotationRole: "x"})))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","namespace":"team-a","object":null}}`))
	f.Add([]byte(`{}`))
	f.Add(ephemeralReviewJSON("seed", "Pod", admissionv1.Update, podJSON("team-a", map[string]string{contract.AnnotationStatus: contract.StatusInjected}),
		[]byte(`{"metadata":{"name":"app","annotations":{"podrole.io/status":"injected"}},"spec":{"ephemeralContainers":[{"name":"d","securityContext":{"privileged":true}}]}}`)))
	s, _ := newTestServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(h, body, "application/json")
		switch {
		case rec.Code == 200:
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("200 without an AdmissionReview: %v %s", err, rec.Body.String())
			}
			in, err := DecodeReview(body)
			if err != nil {
				t.Fatalf("200 for a body DecodeReview rejects: %v", err)
			}
			if out.Response.UID != in.Request.UID {
				t.Fatalf("uid %q not echoed (%q)", in.Request.UID, out.Response.UID)
			}
			if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
				t.Fatal("refusal without a message")
			}
		case rec.Code >= 400 && rec.Code < 500:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
	})
}

// BenchmarkMutate measures one /mutate round trip of a typical pod in-process.
func BenchmarkMutate(b *testing.B) {
	s, _ := newTestServer(b)
	h := s.Handler()
	body := reviewJSON("bench", "team-a", admissionv1.Create, "Pod", podJSON("team-a", map[string]string{contract.AnnotationRole: "app"}))
	b.ReportAllocs()
	for b.Loop() {
		if rec := post(h, body, "application/json"); rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkMutateTLS measures /mutate over HTTPS with a kept-alive HTTP/2
// connection, as the API server calls it, certificate served from a Store.
func BenchmarkMutateTLS(b *testing.B) {
	s, _ := newTestServer(b)
	// As in main: ServeTLS with the Store's config (HTTP/2 via ALPN).
	addr, roots := tlsServer(b, s)
	url := "https://" + addr
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	body := reviewJSON("bench", "team-a", admissionv1.Create, "Pod", podJSON("team-a", map[string]string{contract.AnnotationRole: "app"}))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post(url+"/mutate", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			b.Fatalf("%s %s", resp.Status, resp.Proto)
		}
	}
}
