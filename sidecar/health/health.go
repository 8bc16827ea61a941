// Package health serves the agent's probes and metrics on their own
// listener: /healthz (alive), /started (first credentials cached: the
// startup probe), /readyz (credentials that may be served exist now),
// /metrics.
//
// The listener is on every pod address, not loopback: the kubelet's HTTP
// probes come from the node to the pod IP, and Prometheus scrapes /metrics
// the same way. Other pods can reach it too, which is acceptable because it
// serves nothing secret: the probes say ok/not yet, and the metrics are
// request and STS call counts by route and status, the credentials' time to
// expiry, whether the node's IMDS answered this pod, and Go/process
// figures; no credential, token, key ID, role ARN or session name (the role
// ARN would be no secret either: it is in the pod's podrole.io/role-arn
// annotation). It only answers GET and HEAD, and the agent serves it with
// httplimit.Health (timeouts, 8 KiB headers, 64 connections, the
// longest-idle shed first) so that other pods cannot exhaust the agent's
// memory or starve the kubelet's probes by holding connections open.
package health

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podrole/podrole/contract"
)

// Status is what the probes report.
type Status interface {
	Started() bool
	Ready() bool
}

// Handler serves the probes and the metrics gathered from reg, to GET and
// HEAD only (405 for every other method, on every path).
func Handler(st Status, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+contract.PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		probe(w, true, "alive")
	})
	mux.HandleFunc("GET "+contract.PathStarted, func(w http.ResponseWriter, _ *http.Request) {
		probe(w, st.Started(), "first role credentials cached")
	})
	mux.HandleFunc("GET "+contract.PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		probe(w, st.Ready(), "role credentials available")
	})
	mux.Handle("GET "+contract.PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func probe(w http.ResponseWriter, ok bool, what string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not yet: " + what + "\n"))
		return
	}
	_, _ = w.Write([]byte("ok: " + what + "\n"))
}

// Metrics are the agent's Prometheus metrics. It implements imds.Metrics
// and creds.Metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	stsCalls     *prometheus.CounterVec
	stsErrors    *prometheus.CounterVec
	tokensIssued prometheus.Counter
	nodeIMDS     *prometheus.GaugeVec
}

// NewMetrics registers the metrics on reg. expiry gives the cached
// credentials' expiry (false: none yet); now is the clock.
func NewMetrics(reg prometheus.Registerer, expiry func() (time.Time, bool), now func() time.Time) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_imds_requests_total",
			Help: "Metadata requests by route (path pattern) and HTTP status code.",
		}, []string{"route", "code"}),
		stsCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_sts_calls_total",
			Help: "STS calls made for the role's credentials, by API.",
		}, []string{"api"}),
		stsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podrole_sts_errors_total",
			Help: "STS calls that failed, by API.",
		}, []string{"api"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podrole_imds_tokens_issued_total",
			Help: "IMDSv2 session tokens issued.",
		}),
		nodeIMDS: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NodeIMDSReachableMetric,
			Help: "1 when the node's instance metadata service answered this version (v1: a GET without a token; v2: a token PUT) " +
				"to an unmarked request from this pod at start, as it would an app's; 0 when not. Absent with --check-node-imds=false.",
		}, []string{"version"}),
	}
	expirySeconds := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podrole_credentials_expiry_seconds",
		Help: "Seconds until the cached role credentials expire (0 when there are none; negative once expired).",
	}, func() float64 {
		exp, ok := expiry()
		if !ok {
			return 0
		}
		return exp.Sub(now()).Seconds()
	})
	var errs []error
	for _, c := range []prometheus.Collector{
		m.requests, m.stsCalls, m.stsErrors, m.tokensIssued, m.nodeIMDS, expirySeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// NodeIMDSReachableMetric is the gauge NodeIMDSReachable sets, with label
// "version" ("v1", "v2").
const NodeIMDSReachableMetric = "podrole_node_imds_reachable"

// NodeIMDSReachable records whether the node's IMDS answered version ("v1"
// or "v2") to an app-like request from this pod.
func (m *Metrics) NodeIMDSReachable(version string, reachable bool) {
	v := 0.0
	if reachable {
		v = 1
	}
	m.nodeIMDS.WithLabelValues(version).Set(v)
}

// Request implements imds.Metrics.
func (m *Metrics) Request(route string, code int) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// TokenIssued implements imds.Metrics.
func (m *Metrics) TokenIssued() { m.tokensIssued.Inc() }

// STSCall implements creds.Metrics.
func (m *Metrics) STSCall(api string, err error) {
	m.stsCalls.WithLabelValues(api).Inc()
	if err != nil {
		m.stsErrors.WithLabelValues(api).Inc()
	}
}
