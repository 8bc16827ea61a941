package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
)

// cachedNamespaces answers CachedNamespace from cached and Namespace from
// fetched (recording the deadline it was given).
type cachedNamespaces struct {
	cached, fetched map[string]mutate.Namespace
	deadline        time.Duration // time left when Namespace was called; 0: not called
}

func (c *cachedNamespaces) CachedNamespace(name string) (mutate.Namespace, bool) {
	ns, ok := c.cached[name]
	return ns, ok
}

func (c *cachedNamespaces) Namespace(ctx context.Context, name string) (mutate.Namespace, error) {
	d, ok := ctx.Deadline()
	if !ok {
		return mutate.Namespace{}, errors.New("lookup without a deadline")
	}
	c.deadline = time.Until(d)
	ns, ok := c.fetched[name]
	if !ok {
		return mutate.Namespace{}, errors.New("not found")
	}
	return ns, nil
}

// TestCachedNamespaceLookup: a namespace in the cache is used as is; one
// that is not is fetched within LookupTimeout; one found nowhere refuses
// the pod (fail closed).
func TestCachedNamespaceLookup(t *testing.T) {
	on := map[string]string{contract.LabelInject: contract.InjectEnabled}
	tests := []struct {
		name            string
		cached, fetched bool
		wantAllowed     bool
		wantFetch       bool
	}{
		{"cache hit", true, false, true, false},
		{"cache miss, fetched", false, true, true, true},
		{"nowhere", false, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getter := &cachedNamespaces{cached: map[string]mutate.Namespace{}, fetched: map[string]mutate.Namespace{}}
			if tt.cached {
				getter.cached["team-a"] = mutate.Namespace{Name: "team-a", Labels: on}
			}
			if tt.fetched {
				getter.fetched["team-a"] = mutate.Namespace{Name: "team-a", Labels: on}
			}
			cfg := mutate.DefaultConfig()
			cfg.SidecarImage = "registry.example/podrole-sidecar:test"
			cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			s, err := New(Options{Config: cfg, Namespaces: getter, Logger: slog.New(slog.DiscardHandler),
				Registry: prometheus.NewRegistry(), LookupTimeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			rec := post(s.Handler(), reviewJSON("u1", "team-a", admissionv1.Create, "Pod",
				podJSON("team-a", map[string]string{contract.AnnotationRole: "app"})), "application/json")
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("status %d, body %s: %v", rec.Code, rec.Body.String(), err)
			}
			if out.Response.Allowed != tt.wantAllowed {
				t.Fatalf("allowed %v, want %v: %+v", out.Response.Allowed, tt.wantAllowed, out.Response.Result)
			}
			if tt.wantAllowed && len(out.Response.Patch) == 0 {
				t.Fatal("allowed without the injection patch")
			}
			switch {
			case tt.wantFetch && (getter.deadline <= 0 || getter.deadline > 3*time.Second):
				t.Fatalf("fetch deadline %v, want within the 3s LookupTimeout", getter.deadline)
			case !tt.wantFetch && getter.deadline != 0:
				t.Fatal("fetched a namespace the cache had")
			}
		})
	}
}
