// Package server is the webhook's HTTP layer: it decodes AdmissionReview v1
// requests, looks the pod's namespace up, calls the pure decisions of package
// mutate (/mutate: injection; /validate: the validating webhook, see
// reviewValidate) and encodes the answer. It also serves /healthz, /readyz and
// /metrics.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"sync"
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

// ValidationAllowed is the metrics label of validating requests allowed.
const ValidationAllowed = "allowed"

// NamespaceGetter returns a namespace's labels and annotations.
type NamespaceGetter interface {
	Namespace(ctx context.Context, name string) (mutate.Namespace, error)
}

// CachedNamespaceGetter is a NamespaceGetter that can answer from memory
// without blocking; ok false means "not cached, call Namespace".
type CachedNamespaceGetter interface {
	NamespaceGetter
	CachedNamespace(name string) (ns mutate.Namespace, ok bool)
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
	// Limits bound the HTTP servers (HTTPServer) and the memory requests
	// hold; zero fields take DefaultLimits' values.
	Limits Limits
}

// Server handles admission requests.
type Server struct {
	opts        Options
	admissions  *prometheus.CounterVec
	validations *prometheus.CounterVec
	// outcomes are admissions' children by result (validated: validations'),
	// resolved once: a WithLabelValues per request hashes the label and
	// takes a lock.
	outcomes  map[string]prometheus.Counter
	validated map[string]prometheus.Counter
	latency   prometheus.Histogram
	// shed counts requests answered 503 for want of memory budget.
	shed prometheus.Counter
	// buffers hold request and response bodies between requests (*[]byte).
	buffers sync.Pool
	limits  Limits
	// memory is Limits.MemoryBudget, shared by the requests in flight.
	memory *budget
}

// New registers the metrics and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Namespaces == nil || opts.Logger == nil || opts.Registry == nil {
		return nil, errors.New("server: Namespaces, Logger and Registry are required")
	}
	if opts.LookupTimeout == 0 {
		opts.LookupTimeout = 2 * time.Second
	}
	if opts.Config.Caches == nil {
		// Pods of one workload get the same patch; a few hundred entries
		// cover a cluster's distinct roles and pod shapes in a few MiB at most.
		opts.Config.Caches = mutate.NewCaches(256)
	}
	s := &Server{
		opts:   opts,
		limits: opts.Limits.withDefaults(),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_webhook_admissions_total",
			Help: "Mutating admission requests (/mutate) by result: injected, blocked, patched, skipped, denied or error.",
		}, []string{"result"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_webhook_validations_total",
			Help: "Validating admission requests (/validate) by result: allowed, denied or error.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podrole_webhook_admission_duration_seconds",
			Help:    "Time to answer an admission request, from body read to response written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podrole_webhook_requests_shed_total",
			Help: "Admission requests answered 503 (with Retry-After) because the memory budget for requests in flight had no room for them in time; also counted as result error.",
		}),
	}
	s.memory = newBudget(s.limits.MemoryBudget)
	memoryInUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podrole_webhook_request_memory_bytes",
		Help: "Memory taken from the budget for admission requests in flight (request bodies as they arrive, then each review's estimated cost); the budget is " + fmt.Sprint(s.limits.MemoryBudget) + " bytes.",
	}, func() float64 { return float64(s.memory.inUse()) })
	for _, c := range []prometheus.Collector{s.admissions, s.validations, s.latency, s.shed, memoryInUse} {
		if err := opts.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// Every result appears in /metrics from the start, so rates work at once.
	s.outcomes = map[string]prometheus.Counter{}
	for _, r := range []string{string(mutate.Injected), string(mutate.Blocked), string(mutate.Patched), string(mutate.Skipped), string(mutate.Denied), OutcomeError} {
		s.outcomes[r] = s.admissions.WithLabelValues(r)
	}
	s.validated = map[string]prometheus.Counter{}
	for _, r := range []string{ValidationAllowed, string(mutate.Denied), OutcomeError} {
		s.validated[r] = s.validations.WithLabelValues(r)
	}
	s.buffers.New = func() any { return new([]byte) }
	return s, nil
}

// Handler serves /mutate, /validate, /healthz, /readyz and /metrics (the
// TLS listener).
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	r.Post("/mutate", func(w http.ResponseWriter, r *http.Request) { s.serveReview(w, r, s.review, s.count) })
	r.Post("/validate", func(w http.ResponseWriter, r *http.Request) { s.serveReview(w, r, s.reviewValidate, s.countValidation) })
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
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.count(OutcomeError)
				s.opts.Logger.Error("panic serving request", "path", r.URL.Path, "panic", fmt.Sprint(v))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// serveReview reads an AdmissionReview, decides it with decide, counts the
// outcome with count and writes the answer: the one path of /mutate and
// /validate. Everything the request holds comes from the memory budget
// first: its body's buffer as bytes arrive, then the review's estimated
// cost; without room in time it is answered 503 with Retry-After.
func (s *Server) serveReview(w http.ResponseWriter, r *http.Request,
	decide func(context.Context, *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string), count func(string)) {
	start := time.Now()
	defer func() { s.latency.Observe(time.Since(start).Seconds()) }()

	// The API server sends exactly "application/json": no need to parse it.
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			s.badRequest(w, r, count, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q is not application/json", ct))
			return
		}
	}
	h := &hold{b: s.memory, ctx: r.Context(), deadline: start.Add(s.limits.BudgetWait)}
	defer h.release()
	bufp := s.buffers.Get().(*[]byte)
	body, err := readBody(w, r, h, *bufp)
	defer func() { s.putBuffer(bufp, body) }()
	if err == nil {
		var cost int64
		if cost, err = reviewCost(body); err == nil {
			if h.n+cost > s.memory.max {
				count(OutcomeError)
				s.opts.Logger.Warn("admission request too large to check; refused", "remote", r.RemoteAddr, "bytes", len(body), "estimated_cost", cost)
				tooCostly(w, body, cost, s.memory.max)
				return
			}
			if !h.grow(cost) {
				err = errOverloaded
			}
		}
	}
	if errors.Is(err, errOverloaded) {
		count(OutcomeError)
		s.shed.Inc()
		s.opts.Logger.Warn("admission request shed: memory budget exhausted", "remote", r.RemoteAddr, "in_use", s.memory.inUse())
		overloaded(w)
		return
	}
	if err != nil {
		s.badRequest(w, r, count, http.StatusBadRequest, err)
		return
	}
	review, err := DecodeReview(body)
	if err != nil {
		s.badRequest(w, r, count, http.StatusBadRequest, err)
		return
	}
	resp, outcome := decide(r.Context(), review.Request)
	resp.UID = review.Request.UID
	count(outcome)

	// The request body is decoded (and copied) by now, so its buffer is
	// free again. Encode is Marshal plus a newline, which is not sent.
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	buf := bytes.NewBuffer(body[:0])
	if err := json.NewEncoder(buf).Encode(&out); err != nil {
		s.opts.Logger.Error("encode admission response", "uid", string(resp.UID), "error", err.Error())
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	body = buf.Bytes() // the buffer pooled on return
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(bytes.TrimSuffix(body, []byte("\n"))); err != nil {
		s.opts.Logger.Debug("write admission response", "error", err.Error())
	}
}

// badRequest counts and answers a request that could not be read or decoded.
func (s *Server) badRequest(w http.ResponseWriter, r *http.Request, count func(string), status int, err error) {
	count(OutcomeError)
	s.opts.Logger.Warn("bad admission request", "remote", r.RemoteAddr, "error", err.Error())
	http.Error(w, err.Error(), status)
}

// count adds one admission with result outcome.
func (s *Server) count(outcome string) {
	c, ok := s.outcomes[outcome]
	if !ok {
		c = s.admissions.WithLabelValues(outcome)
	}
	c.Inc()
}

// countValidation adds one validating request; a decision that allowed the
// request (outcome skipped) counts as allowed.
func (s *Server) countValidation(outcome string) {
	if outcome == string(mutate.Skipped) {
		outcome = ValidationAllowed
	}
	c, ok := s.validated[outcome]
	if !ok {
		c = s.validations.WithLabelValues(outcome)
	}
	c.Inc()
}

// putBuffer keeps b (the request's buffer as it ended up) for the next
// request in p, unless it grew large.
func (s *Server) putBuffer(p *[]byte, b []byte) {
	if cap(b) > maxPooledBuffer {
		b = nil
	}
	*p = b[:0]
	s.buffers.Put(p)
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
	log := reqLog{ctx: ctx, base: s.opts.Logger, req: req}
	allow := &admissionv1.AdmissionResponse{Allowed: true}

	// kubectl debug adds ephemeral containers to a running pod through this
	// subresource, never through a pod CREATE.
	if req.SubResource == "ephemeralcontainers" {
		if req.Operation != admissionv1.Update {
			log.Debug("ephemeralcontainers request that is not an update; allowed", "kind", req.Kind.String())
			return allow, string(mutate.Skipped)
		}
		return s.reviewEphemeral(log.logger(), req, mutate.CheckEphemeral)
	}
	// The webhook configuration sends pod CREATEs (and the ephemeralcontainers
	// updates above); anything else is not ours to judge.
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
	log = log.withPod(name)

	ns, err := s.namespace(ctx, pod.Namespace)
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
	case mutate.Injected, mutate.Blocked, mutate.Patched:
		log.Info("pod mutated", "result", string(res.Outcome), "role_arn", res.RoleARN)
		return patched(res), string(res.Outcome)
	default:
		log.Debug("pod skipped", "reason", res.Message)
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: res.Warnings}, string(res.Outcome)
	}
}

// reviewEphemeral decides an UPDATE of pods/ephemeralcontainers with decide
// (mutate.CheckEphemeral on /mutate, mutate.ValidateEphemeral on /validate).
// The API server sends the whole Pod as object (with the new list) and
// oldObject. No namespace lookup: the pod itself says whether podrole
// injected it, and a lookup failure would needlessly stop debug sessions.
func (s *Server) reviewEphemeral(log *slog.Logger, req *admissionv1.AdmissionRequest, decide func(old, pod *corev1.Pod, cfg mutate.Config) mutate.Result) (*admissionv1.AdmissionResponse, string) {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		// Kubernetes before 1.22 sent kind EphemeralContainers here; judging
		// it as a Pod would see no containers and fail open.
		log.Warn("ephemeralcontainers request is not a v1 Pod; refusing", "kind", req.Kind.String())
		return refuse(http.StatusBadRequest, fmt.Sprintf("podrole: the ephemeralcontainers request carries kind %q, not a v1 Pod, so podrole cannot check the new containers; it needs Kubernetes 1.22 or later", req.Kind.String())), OutcomeError
	}
	old, pod, resp := decodePods(log, req, "its ephemeral containers")
	if resp != nil {
		return resp, OutcomeError
	}
	log = log.With("pod", pod.Name, "subresource", req.SubResource)
	res := decide(old, pod, s.opts.Config)
	switch res.Outcome {
	case mutate.Denied:
		log.Info("ephemeral container denied", "reason", res.Message)
		return refuse(http.StatusForbidden, res.Message), string(res.Outcome)
	case mutate.Patched:
		log.Info("ephemeral containers patched", "reason", res.Message)
		return patched(res), string(res.Outcome)
	}
	log.Debug("ephemeral containers allowed", "reason", res.Message)
	return &admissionv1.AdmissionResponse{Allowed: true}, string(res.Outcome)
}

// decodePods decodes a request's object (required) and oldObject (may be
// absent), or returns the refusal to send; what names what is being checked.
func decodePods(log *slog.Logger, req *admissionv1.AdmissionRequest, what string) (old, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) {
	pod, err := decodePod(req.Object.Raw)
	if err != nil || pod == nil {
		if err == nil {
			err = errors.New("the request has no object")
		}
		log.Warn("cannot decode pod", "error", err.Error())
		return nil, nil, refuse(http.StatusBadRequest, fmt.Sprintf("podrole: cannot decode the pod to check %s: %v", what, err))
	}
	old, err = decodePod(req.OldObject.Raw)
	if err != nil {
		log.Warn("cannot decode old pod", "error", err.Error())
		return nil, nil, refuse(http.StatusBadRequest, fmt.Sprintf("podrole: cannot decode the stored pod (oldObject) to check %s: %v", what, err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	return old, pod, nil
}

// patched is the response allowing a request with res's JSONPatch.
func patched(res mutate.Result) *admissionv1.AdmissionResponse {
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: res.Patch, PatchType: &pt, Warnings: res.Warnings}
}

// namespace looks name up, bounded by LookupTimeout. A cache hit needs no
// timeout, and skipping it saves a timer and a context per admission.
func (s *Server) namespace(ctx context.Context, name string) (mutate.Namespace, error) {
	if c, ok := s.opts.Namespaces.(CachedNamespaceGetter); ok {
		if ns, ok := c.CachedNamespace(name); ok {
			return ns, nil
		}
	}
	lctx, cancel := context.WithTimeout(ctx, s.opts.LookupTimeout)
	defer cancel()
	return s.opts.Namespaces.Namespace(lctx, name)
}

// decodePod decodes raw as a Pod; nil, nil when raw is empty or null.
func decodePod(raw []byte) (*corev1.Pod, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return nil, err
	}
	return &pod, nil
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

// reqLog logs with a request's attributes (uid, namespace, operation and,
// once known, pod), building them only for records the level lets through:
// slog's With formats its attributes at once, which cost every admission
// time and allocations even when the record was then dropped. The output is
// the same as with With.
type reqLog struct {
	ctx  context.Context
	base *slog.Logger
	req  *admissionv1.AdmissionRequest
	pod  *string
}

func (l reqLog) withPod(name string) reqLog {
	l.pod = &name
	return l
}

// logger is the request's logger with its attributes.
func (l reqLog) logger() *slog.Logger {
	lg := l.base.With("uid", string(l.req.UID), "namespace", l.req.Namespace, "operation", string(l.req.Operation))
	if l.pod != nil {
		lg = lg.With("pod", *l.pod)
	}
	return lg
}

func (l reqLog) log(level slog.Level, msg string, args []any) {
	if l.base.Enabled(l.ctx, level) {
		l.logger().Log(l.ctx, level, msg, args...)
	}
}

func (l reqLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args) }
func (l reqLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args) }
func (l reqLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args) }
func (l reqLog) Error(msg string, args ...any) { l.log(slog.LevelError, msg, args) }
