// Package server is the webhook's HTTP layer: it decodes AdmissionReview v1
// requests, looks the pod's namespace up, calls the pure mutation and encodes
// the answer. It also serves /healthz, /readyz and /metrics.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxReviewBytes bounds a request body. The API server caps objects at
// 3 MiB, so a larger AdmissionReview is not from it.
const MaxReviewBytes = 3 << 20

// OutcomeError is the metrics label of requests that could not be decided
// (bad request, namespace lookup failure, panic).
const OutcomeError = "error"

// NamespaceGetter returns a namespace's labels and annotations.
type NamespaceGetter interface {
	Namespace(ctx context.Context, name string) (mutate.Namespace, error)
}

// Check is a named readiness condition; nil means ready.
type Check struct {
	Name  string
	Ready func() error
}

// Options are the server's dependencies.
type Options struct {
	Config     mutate.Config
	Namespaces NamespaceGetter
	Logger     *slog.Logger
	// Registry receives the webhook's metrics and is served on /metrics.
	Registry *prometheus.Registry
	Ready    []Check
	// LookupTimeout bounds the namespace lookup (default 2s, inside the
	// webhook configuration's 5s timeout).
	LookupTimeout time.Duration
}

// Server handles admission requests.
type Server struct {
	opts       Options
	admissions *prometheus.CounterVec
	latency    prometheus.Histogram
}

// New registers the metrics and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Namespaces == nil || opts.Logger == nil || opts.Registry == nil {
		return nil, errors.New("server: Namespaces, Logger and Registry are required")
	}
	if opts.LookupTimeout == 0 {
		opts.LookupTimeout = 2 * time.Second
	}
	s := &Server{
		opts: opts,
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_webhook_admissions_total",
			Help: "Pod admission requests by result: injected, blocked, skipped, denied or error.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podrole_webhook_admission_duration_seconds",
			Help:    "Time to answer an admission request, from body read to response written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, c := range []prometheus.Collector{s.admissions, s.latency} {
		if err := opts.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// Every result appears in /metrics from the start, so rates work at once.
	for _, r := range []string{string(mutate.Injected), string(mutate.Blocked), string(mutate.Skipped), string(mutate.Denied), OutcomeError} {
		s.admissions.WithLabelValues(r)
	}
	return s, nil
}

// Handler serves /mutate, /healthz, /readyz and /metrics (the TLS listener).
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	r.Post("/mutate", s.serveMutate)
	s.health(r)
	return r
}

// HealthHandler serves /healthz, /readyz and /metrics only (the plain-HTTP
// probe listener, so kubelet probes need no TLS).
func (s *Server) HealthHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	s.health(r)
	return r
}

func (s *Server) health(r chi.Router) {
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	r.Get("/readyz", s.serveReadyz)
	r.Handle("/metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{Registry: s.opts.Registry}))
}

func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	for _, c := range s.opts.Ready {
		if err := c.Ready(); err != nil {
			http.Error(w, fmt.Sprintf("not ready: %s: %v", c.Name, err), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// recoverer turns a panic into a 500 and an error metric: one bad request
// must not take the webhook (and every pod creation) down.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.admissions.WithLabelValues(OutcomeError).Inc()
				s.opts.Logger.Error("panic serving request", "path", r.URL.Path, "panic", fmt.Sprint(v))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveMutate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { s.latency.Observe(time.Since(start).Seconds()) }()

	review, status, err := readReview(w, r)
	if err != nil {
		s.admissions.WithLabelValues(OutcomeError).Inc()
		s.opts.Logger.Warn("bad admission request", "remote", r.RemoteAddr, "error", err.Error())
		http.Error(w, err.Error(), status)
		return
	}
	resp, outcome := s.review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	s.admissions.WithLabelValues(outcome).Inc()

	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	body, err := json.Marshal(&out)
	if err != nil {
		s.opts.Logger.Error("encode admission response", "uid", string(resp.UID), "error", err.Error())
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(body); err != nil {
		s.opts.Logger.Debug("write admission response", "error", err.Error())
	}
}

// readReview reads and checks an AdmissionReview v1 request body. On error
// it returns the HTTP status to answer with.
func readReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, int, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q is not application/json", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusBadRequest, fmt.Errorf("request body is larger than %d bytes", MaxReviewBytes)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("read request body: %w", err)
	}
	review, err := DecodeReview(body)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	return review, 0, nil
}

// DecodeReview parses body as an AdmissionReview v1 carrying a request.
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	if len(body) == 0 {
		return nil, errors.New("empty request body: expected an AdmissionReview")
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decode AdmissionReview: %w", err)
	}
	if gv := admissionv1.SchemeGroupVersion.String(); review.APIVersion != gv || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("got %q %q, want apiVersion %s kind AdmissionReview (set admissionReviewVersions: [v1])", review.APIVersion, review.Kind, gv)
	}
	if review.Request == nil {
		return nil, errors.New("AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("AdmissionReview request has no uid")
	}
	return &review, nil
}

// review decides one request; it never returns nil.
func (s *Server) review(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string) {
	log := s.opts.Logger.With("uid", string(req.UID), "namespace", req.Namespace, "operation", string(req.Operation))
	allow := &admissionv1.AdmissionResponse{Allowed: true}

	// The webhook configuration only sends pod CREATEs; anything else is not
	// ours to judge.
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		log.Debug("not a pod creation; allowed", "kind", req.Kind.String(), "subresource", req.SubResource)
		return allow, string(mutate.Skipped)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		log.Warn("cannot decode pod", "error", err.Error())
		return refuse(http.StatusBadRequest, fmt.Sprintf("podrole: cannot decode the pod: %v", err)), OutcomeError
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	log = log.With("pod", name)

	lctx, cancel := context.WithTimeout(ctx, s.opts.LookupTimeout)
	defer cancel()
	ns, err := s.opts.Namespaces.Namespace(lctx, pod.Namespace)
	if err != nil {
		// Fail closed: without the namespace we cannot know its allow-lists.
		log.Error("namespace lookup failed; refusing", "error", err.Error())
		return refuse(http.StatusInternalServerError, fmt.Sprintf("podrole: cannot look up namespace %q to check its allow-lists (%v); retry, and if it persists check the webhook's logs and RBAC (namespaces get/list/watch)", pod.Namespace, err)), OutcomeError
	}

	res := mutate.Mutate(&pod, ns, s.opts.Config)
	switch res.Outcome {
	case mutate.Denied:
		log.Info("pod denied", "reason", res.Message)
		return refuse(http.StatusForbidden, res.Message), string(res.Outcome)
	case mutate.Injected, mutate.Blocked:
		log.Info("pod mutated", "result", string(res.Outcome), "role_arn", res.RoleARN)
		pt := admissionv1.PatchTypeJSONPatch
		return &admissionv1.AdmissionResponse{Allowed: true, Patch: res.Patch, PatchType: &pt, Warnings: res.Warnings}, string(res.Outcome)
	default:
		log.Debug("pod skipped", "reason", res.Message)
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: res.Warnings}, string(res.Outcome)
	}
}

func refuse(code int32, msg string) *admissionv1.AdmissionResponse {
	reason := metav1.StatusReasonForbidden
	switch code {
	case http.StatusBadRequest:
		reason = metav1.StatusReasonBadRequest
	case http.StatusInternalServerError:
		reason = metav1.StatusReasonInternalError
	}
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg,
	}}
}
