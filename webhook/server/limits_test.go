package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// repeat joins elem(0), elem(1), ... with commas up to about size bytes.
func repeat(size int, elem func(i int) string) string {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(elem(i))
	}
	return b.String()
}

// costShape is a pod built to make one part of serving it expensive.
type costShape struct {
	name      string
	path      string // /mutate or /validate
	namespace string // team-a (redirect mode) or env (env mode)
	op        admissionv1.Operation
	sub       string
	pod, old  string
}

// costShapes are pods of nothing but empty objects, containers, strings or
// map entries (what decoding amplifies most), on every path a pod takes:
// injection, blocking, re-verification of an injected pod (the most
// expensive), the validating webhook, updates and ephemeral containers.
func costShapes(size int) []costShape {
	role := `"iam.amazonaws.com/role":"app"`
	status := `"podrole.io/status":"injected","podrole.io/role-arn":"arn:aws:iam::111122223333:role/app"`
	empty := func(int) string { return "{}" }
	str := func(int) string { return `""` }
	entry := func(i int) string { return fmt.Sprintf(`"%d":""`, i) }
	withMeta := func(annotations, spec string) string {
		return `{"metadata":{"name":"p","annotations":{` + annotations + `}},"spec":{` + spec + `}}`
	}
	var shapes []costShape
	for _, v := range []struct {
		name, annotations string
	}{{"inject", role}, {"verify", role + "," + status}} {
		for _, ns := range []string{"team-a", "env"} {
			a := v.annotations
			if ns == "env" && v.name == "verify" {
				a += `,"podrole.io/mode":"env"`
			}
			add := func(name, spec string) {
				shapes = append(shapes, costShape{name: v.name + " " + ns + " " + name, path: "/mutate", namespace: ns, op: admissionv1.Create, pod: withMeta(a, spec)})
			}
			add("containers {}", `"containers":[`+repeat(size, empty)+`]`)
			add("containers null", `"containers":[`+repeat(size, func(int) string { return "null" })+`]`)
			add("CONTAINERS {}", `"CONTAINERS":[`+repeat(size, empty)+`]`)
			add("initContainers {}", `"initContainers":[`+repeat(size, empty)+`]`)
			add("volumes {}", `"containers":[{}],"volumes":[`+repeat(size, empty)+`]`)
			add("env {}", `"containers":[{"env":[`+repeat(size, empty)+`]}]`)
			add("mounts {}", `"containers":[{"volumeMounts":[`+repeat(size, empty)+`]}]`)
			add("ports", `"containers":[{"ports":[`+repeat(size, func(i int) string { return fmt.Sprintf(`{"containerPort":%d}`, i%65536) })+`]}]`)
			add("tolerations {}", `"containers":[{}],"tolerations":[`+repeat(size, empty)+`]`)
			add("command strings", `"containers":[{"command":[`+repeat(size, str)+`]}]`)
			add("dropped capabilities", `"containers":[{"securityContext":{"capabilities":{"drop":[`+repeat(size, str)+`]}}}]`)
			add("one long string", `"containers":[{"args":["`+strings.Repeat("a", size)+`"]}]`)
			shapes = append(shapes,
				costShape{name: v.name + " " + ns + " annotations", path: "/mutate", namespace: ns, op: admissionv1.Create, pod: withMeta(a+","+repeat(size, entry), `"containers":[{}]`)},
				costShape{name: v.name + " " + ns + " managedFields", path: "/mutate", namespace: ns, op: admissionv1.Create,
					pod: `{"metadata":{"name":"p","annotations":{` + a + `},"managedFields":[` + repeat(size, empty) + `]},"spec":{"containers":[{}]}}`},
				costShape{name: v.name + " " + ns + " validate containers {}", path: "/validate", namespace: ns, op: admissionv1.Create, pod: withMeta(a, `"containers":[`+repeat(size, empty)+`]`)},
			)
		}
	}
	half := func(elem func(int) string) string {
		return withMeta(status, `"containers":[`+repeat(size/2, elem)+`]`)
	}
	named := func(i int) string { return fmt.Sprintf(`{"name":"c%d"}`, i) }
	shapes = append(shapes,
		costShape{name: "update containers {}", path: "/validate", namespace: "team-a", op: admissionv1.Update, pod: half(empty), old: half(empty)},
		costShape{name: "update named containers", path: "/validate", namespace: "team-a", op: admissionv1.Update, pod: half(named), old: half(named)},
		costShape{name: "ephemeral {}", path: "/mutate", namespace: "team-a", op: admissionv1.Update, sub: "ephemeralcontainers",
			pod: withMeta(status, `"containers":[{}],"ephemeralContainers":[`+repeat(size, empty)+`]`), old: withMeta(status, `"containers":[{}]`)},
		costShape{name: "ephemeral validate {}", path: "/validate", namespace: "team-a", op: admissionv1.Update, sub: "ephemeralcontainers",
			pod: withMeta(status, `"containers":[{}],"ephemeralContainers":[`+repeat(size, empty)+`]`), old: withMeta(status, `"containers":[{}]`)},
	)
	return shapes
}

func (c costShape) review() []byte {
	old := "null"
	if c.old != "" {
		old = c.old
	}
	return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},` +
		`"resource":{"version":"v1","resource":"pods"},"subResource":"` + c.sub + `","namespace":"` + c.namespace + `","operation":"` + string(c.op) +
		`","object":` + c.pod + `,"oldObject":` + old + `}}`)
}

// costServer is a server with a budget large enough for any shape, in
// redirect mode (namespace team-a) and env mode (namespace env).
func costServer(t testing.TB, budget int64) *Server {
	t.Helper()
	cfg := mutate.DefaultConfig()
	cfg.SidecarImage = "registry.example/podrole-sidecar:test"
	cfg.BaseRoleARN = "arn:aws:iam::111122223333:role/"
	cfg.Source, cfg.Region = contract.SourceWebIdentity, "eu-west-1"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	nss := testNamespaces()
	nss["env"] = mutate.Namespace{Name: "env", Labels: map[string]string{contract.LabelInject: contract.InjectEnabled, contract.LabelPodSecurityEnforce: "restricted"}}
	s, err := New(Options{Config: cfg, Namespaces: nss, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Limits: Limits{MemoryBudget: budget}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReviewCostCoversAllocation serves each cost shape, as large as the
// default memory budget admits, and requires reviewCost's estimate to be
// at least what serving it allocated: the budget bounds memory only if the
// estimate does.
func TestReviewCostCoversAllocation(t *testing.T) {
	s := costServer(t, 4<<30)
	h := s.Handler()
	budget := DefaultLimits().MemoryBudget
	// A typical pod first: it also fills what the first call of each path
	// caches once per process.
	typical := costShape{name: "typical pod", path: "/mutate", namespace: "team-a", op: admissionv1.Create,
		pod: string(podJSON("team-a", map[string]string{contract.AnnotationRole: "app"}))}
	postTo(h, typical.review(), "/mutate")
	small := costShapes(4 << 10)
	shapes := []costShape{typical}
	for i, c := range small {
		// Every shape costs at least as much on the re-verification path:
		// of injection only the containers, which it patches one by one.
		if strings.HasPrefix(c.name, "inject") && !strings.Contains(c.name, "containers") {
			continue
		}
		// Scale the shape to the budget: its cost grows with its size.
		b := c.review()
		cost, err := reviewCost(b)
		if err != nil {
			t.Fatal(err)
		}
		size := min(int(float64(budget-budget/16)/float64(cost)*float64(len(b))), MaxReviewBytes-8<<10)
		shapes = append(shapes, costShapes(size)[i])
	}
	for _, c := range shapes {
		body := c.review()
		cost, err := reviewCost(body)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		rec := postTo(h, body, c.path)
		runtime.ReadMemStats(&m1)
		alloc := m1.TotalAlloc - m0.TotalAlloc
		if rec.Code != http.StatusOK {
			t.Errorf("%s: status %d", c.name, rec.Code)
		}
		t.Logf("%-40s body %7d B, allocated %6.2f MiB, estimated %6.2f MiB (%.0f%%)", c.name, len(body), float64(alloc)/(1<<20), float64(cost)/(1<<20), 100*float64(alloc)/float64(cost))
		if int64(alloc) > cost {
			t.Errorf("%s: serving it allocated %d bytes, more than its estimated cost %d", c.name, alloc, cost)
		}
	}
}

// TestReviewCost checks the scan's counts on small inputs.
func TestReviewCost(t *testing.T) {
	cost := func(tokens, objects, containers int64, body string) int64 {
		return costPerByte*int64(len(body)) + costPerToken*tokens + costPerObject*objects + costPerContainer*containers
	}
	for _, tt := range []struct {
		body                        string
		tokens, objects, containers int64
	}{
		{`{}`, 1, 1, 0},
		{`{"a":"{[,:"}`, 2, 1, 0},
		{`{"containers":[]}`, 3, 1, 0},
		{`{"containers":[{}]}`, 4, 2, 1},
		{`{"containers" : [ {} , {"name":"x"} ]}`, 7, 3, 2},
		{`{"containers":[null,null,null]}`, 5, 1, 3},
		{`{"initContainers":[{}],"ephemeralContainers":[{},{}]}`, 10, 4, 3},
		{`{"InitContainerS":[{}]}`, 4, 2, 1},
		{`{"contain\u0065rs":[{}]}`, 4, 2, 1}, // escapes: assumed a container list
		{`{"containerſ":[{}]}`, 4, 2, 1},      // encoding/json folds ſ to s
		{`{"env":[{}],"x":"containers","y":[{}]}`, 10, 3, 0},
		{`{"containers":{"a":[{}]}}`, 6, 3, 0},
		{`{"containers":[{"env":[{},{}]}]}`, 9, 4, 1},
		{`["containers",[{}]]`, 4, 1, 0},
	} {
		got, err := reviewCost([]byte(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if want := cost(tt.tokens, tt.objects, tt.containers, tt.body); got != want {
			t.Errorf("%s: cost %d, want %d (tokens %d, objects %d, containers %d)", tt.body, got, want, tt.tokens, tt.objects, tt.containers)
		}
	}
	if _, err := reviewCost([]byte(strings.Repeat("[", maxJSONDepth+1))); err == nil {
		t.Error("no error for nesting deeper than encoding/json allows")
	}
}

// TestTooCostlyRefused: a review that alone would exceed the budget is
// refused with a message the user sees, at once and without decoding it;
// a 1.5 MiB pod (etcd's default limit) of one long string is admitted.
func TestTooCostlyRefused(t *testing.T) {
	s := costServer(t, 64<<20)
	h := s.Handler()
	bomb := costShape{path: "/mutate", namespace: "team-a", op: admissionv1.Create,
		pod: `{"metadata":{"name":"p"},"spec":{"containers":[` + repeat(MaxReviewBytes-1024, func(int) string { return "{}" }) + `]}}`}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	rec := postTo(h, bomb.review(), "/mutate")
	runtime.ReadMemStats(&m1)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 32<<20 {
		t.Errorf("refusing a 3 MiB review of a million containers allocated %d MiB", alloc>>20)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 || out.Response == nil {
		t.Fatalf("status %d, body %.300s", rec.Code, rec.Body.String())
	}
	if r := out.Response; r.Allowed || r.UID != "u" || r.Result == nil || r.Result.Code != http.StatusRequestEntityTooLarge ||
		r.Result.Reason != metav1.StatusReasonRequestEntityTooLarge || !strings.Contains(r.Result.Message, "podrole: this request is too large for podrole to check") {
		t.Fatalf("response %+v %+v", r, r.Result)
	}
	// Not a review: a plain 413.
	if rec := postTo(h, []byte(`[`+repeat(MaxReviewBytes-1024, func(int) string { return "{}" })+`]`), "/validate"); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("garbage: status %d", rec.Code)
	}
	long := costShape{path: "/mutate", namespace: "team-a", op: admissionv1.Create,
		pod: `{"metadata":{"name":"p","annotations":{"iam.amazonaws.com/role":"app","note":"` + strings.Repeat("a", 3<<19) + `"}},"spec":{"containers":[{}]}}`}
	if a := answer(t, s, "/mutate", long.review()); !a.Allowed || len(a.Patch) == 0 {
		t.Errorf("a 1.5 MiB pod (etcd's default limit) of one long annotation: %+v", a.Result)
	}
}

// postTo is post to path.
func postTo(h http.Handler, body []byte, path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestBudget: bytes are taken while there is room; a request that does not
// fit waits until its deadline, or until enough is released; a small
// request is not queued behind a large one.
func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if !b.acquire(ctx, 60, time.Now()) || !b.acquire(ctx, 40, time.Now()) || b.inUse() != 100 {
		t.Fatalf("in use %d", b.inUse())
	}
	if b.acquire(ctx, 1, time.Now().Add(50*time.Millisecond)) {
		t.Fatal("took a byte of a full budget")
	}
	if b.acquire(ctx, 101, time.Now().Add(time.Hour)) {
		t.Fatal("took more than the budget")
	}
	large, small := make(chan bool), make(chan bool)
	go func() { large <- b.acquire(ctx, 80, time.Now().Add(time.Hour)) }()
	go func() { small <- b.acquire(ctx, 30, time.Now().Add(time.Hour)) }()
	b.release(40) // room for the small one only
	if !<-small {
		t.Fatal("the small request did not get the room released")
	}
	b.release(60) // now 70 free: room for the large one after the small one
	b.release(30)
	if !<-large {
		t.Fatal("the large request did not get the room released")
	}
	if b.inUse() != 80 {
		t.Fatalf("in use %d, want 80", b.inUse())
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan bool)
	go func() { done <- b.acquire(cctx, 50, time.Now().Add(time.Hour)) }()
	cancel()
	if <-done {
		t.Fatal("took bytes for a cancelled request")
	}
}
