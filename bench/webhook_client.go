package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TypicalPodReview is an AdmissionReview for a pod as a Deployment creates it:
// one app container with env, ports, probes, resources and a token volume,
// asking for a role in namespace ns.
func TypicalPodReview(ns string) ([]byte, error) {
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "checkout-7d9c8b6f5-", Namespace: ns,
			Labels:      map[string]string{"app": "checkout", "pod-template-hash": "7d9c8b6f5"},
			Annotations: map[string]string{"iam.amazonaws.com/role": "checkout-reader", "prometheus.io/scrape": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-7d9c8b6f5",
				UID: "2b0f7c5e-8e0d-4f4e-9d0e-1f0c6b1e2a3b", Controller: ptr(true), BlockOwnerDeletion: ptr(true)}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "checkout",
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.example/checkout:1.42.0",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				Env: []corev1.EnvVar{{Name: "AWS_REGION", Value: "eu-west-1"}, {Name: "LOG_LEVEL", Value: "info"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstrFrom("http")}}},
				VolumeMounts:   []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}}}}}}},
		},
	}
	raw, err := json.Marshal(&pod)
	if err != nil {
		return nil, err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("705ab4f5-6393-11e8-b7cc-42010a800002"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: ns, Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw},
		},
	}
	return json.Marshal(&review)
}

// WebhookClient posts a fixed review to /mutate over TLS.
type WebhookClient struct {
	URL    string
	Body   []byte
	HTTP   *http.Client
	Proto  string // "HTTP/1.1" or "HTTP/2.0"
	Expect string // a substring every response must contain (e.g. the injected container name)
}

// NewWebhookClient returns a client speaking HTTP/2 when h2, else HTTP/1.1,
// trusting roots, with enough idle connections for concurrency workers.
func NewWebhookClient(url string, body []byte, roots *x509.CertPool, h2 bool, concurrency int, expect string) *WebhookClient {
	tlsConf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	var rt http.RoundTripper
	proto := "HTTP/1.1"
	if h2 {
		// The standard library's HTTP/2, as the API server's client uses.
		t := &http.Transport{TLSClientConfig: tlsConf, Protocols: new(http.Protocols)}
		t.Protocols.SetHTTP2(true)
		rt = t
		proto = "HTTP/2.0"
	} else {
		tlsConf.NextProtos = []string{"http/1.1"}
		rt = &http.Transport{TLSClientConfig: tlsConf, MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2,
			ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	}
	return &WebhookClient{URL: url, Body: body, HTTP: &http.Client{Transport: rt, Timeout: 10 * time.Second}, Proto: proto, Expect: expect}
}

// Admit is an Op: one admission, answer checked.
func (c *WebhookClient) Admit(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /mutate: %s: %.200s", resp.Status, b)
	}
	if resp.Proto != c.Proto {
		return fmt.Errorf("POST /mutate: spoke %s, want %s", resp.Proto, c.Proto)
	}
	if !bytes.Contains(b, []byte(`"allowed":true`)) || !bytes.Contains(b, []byte(c.Expect)) {
		return fmt.Errorf("POST /mutate: unexpected answer: %.300s", b)
	}
	return nil
}

// Close releases the client's connections.
func (c *WebhookClient) Close() {
	if t, ok := c.HTTP.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

func ptr[T any](v T) *T { return &v }

func intstrFrom(name string) intstr.IntOrString { return intstr.FromString(name) }
