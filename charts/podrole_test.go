package charts

import (
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/podrole/podrole/internal/kubetest"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

// releaseNamespace is where the tests' release record would live: the chart
// owns podrole-system, so a release is installed from another namespace.
const releaseNamespace = "default"

// rendered is the chart's output for one set of values.
type rendered struct {
	manifests []byte // every template but NOTES.txt, as one YAML stream
	notes     string
}

// render renders charts/podrole the way `helm install podrole charts/podrole
// --namespace ns -f files... ` does: value files merged in order over the
// chart's defaults, checked against values.schema.json, then every template.
func render(t *testing.T, ns string, valueFiles []string, inline string) (rendered, error) {
	t.Helper()
	chrt, err := loader.Load("podrole")
	if err != nil {
		t.Fatalf("load charts/podrole: %v", err)
	}
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			t.Fatalf("read values %s: %v", f, err)
		}
		vals = mergeValues(vals, v)
	}
	if inline != "" {
		v, err := chartutil.ReadValues([]byte(inline))
		if err != nil {
			t.Fatalf("inline values %q: %v", inline, err)
		}
		vals = mergeValues(vals, v)
	}
	top, err := chartutil.ToRenderValues(chrt, vals, chartutil.ReleaseOptions{Name: "podrole", Namespace: ns, IsInstall: true}, nil)
	if err != nil {
		return rendered{}, err
	}
	// Strict: a template that reads a value the chart does not define fails
	// here instead of rendering an empty string.
	out, err := engine.Engine{Strict: true}.Render(chrt, top)
	if err != nil {
		return rendered{}, err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	var r rendered
	for _, name := range names {
		if strings.HasSuffix(name, "/NOTES.txt") {
			r.notes = out[name]
			continue
		}
		r.manifests = append(r.manifests, "\n---\n"+out[name]...)
	}
	return r, nil
}

// mergeValues merges b into a as helm merges -f files: maps deeply, anything
// else replaced.
func mergeValues(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// mustRender is render that fails the test on error.
func mustRender(t *testing.T, valueFiles []string, inline string) rendered {
	t.Helper()
	r, err := render(t, releaseNamespace, valueFiles, inline)
	if err != nil {
		t.Fatalf("render charts/podrole (values %v %q): %v", valueFiles, inline, err)
	}
	return r
}

// objects parses a YAML stream into objects keyed by apiVersion, kind,
// namespace and name, as plain JSON values (what the API server would get).
func objects(t *testing.T, what string, stream []byte) map[string]map[string]any {
	t.Helper()
	docs, err := kubetest.SplitYAML(stream)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	objs := map[string]map[string]any{}
	for _, doc := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, doc)
		}
		meta, _ := obj["metadata"].(map[string]any)
		name := fmt.Sprint(meta["name"])
		if ns, ok := meta["namespace"].(string); ok {
			name = ns + "/" + name
		}
		key := fmt.Sprintf("%v %v %s", obj["apiVersion"], obj["kind"], name)
		if _, dup := objs[key]; dup {
			t.Fatalf("%s: %s twice", what, key)
		}
		normalize(t, what+": "+key, obj)
		objs[key] = obj
	}
	return objs
}

// normalize sorts every container's env by name: the only difference the
// comparison allows. Kustomize's patches put the variables they add before
// the base's (a different order in each overlay), the chart writes one
// order. The order means nothing here as long as no name repeats and no
// value refers to another variable ($(NAME)), which normalize checks.
func normalize(t *testing.T, what string, obj any) {
	t.Helper()
	switch v := obj.(type) {
	case map[string]any:
		for k, child := range v {
			if env, ok := child.([]any); ok && k == "env" {
				sortEnv(t, what, env)
			}
			normalize(t, what, child)
		}
	case []any:
		for _, child := range v {
			normalize(t, what, child)
		}
	}
}

func sortEnv(t *testing.T, what string, env []any) {
	t.Helper()
	name := func(i int) string {
		e, _ := env[i].(map[string]any)
		n, _ := e["name"].(string)
		return n
	}
	seen := map[string]bool{}
	for i, e := range env {
		if seen[name(i)] {
			t.Errorf("%s: env %s twice", what, name(i))
		}
		seen[name(i)] = true
		if strings.Contains(fmt.Sprint(e), "$(") {
			t.Errorf("%s: env %v refers to another variable: its order would matter", what, e)
		}
	}
	sort.SliceStable(env, func(i, j int) bool { return name(i) < name(j) })
}

// diff lists where a and b differ, one line per path.
func diff(path string, a, b any) []string {
	am, aMap := a.(map[string]any)
	bm, bMap := b.(map[string]any)
	if aMap && bMap {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		var out []string
		for _, k := range sortedKeys(keys) {
			out = append(out, diff(path+"."+k, am[k], bm[k])...)
		}
		return out
	}
	al, aList := a.([]any)
	bl, bList := b.([]any)
	if aList && bList && len(al) == len(bl) {
		var out []string
		for i := range al {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i])...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: kustomize %s, chart %s", path, compact(a), compact(b))}
}

func compact(v any) string {
	if v == nil {
		return "<absent>"
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestChartRendersKustomizeObjects renders the chart for each way podrole is
// installed and compares it, object by object, with kubectl kustomize of the
// overlay that installs the same thing: every object on both sides, equal
// once parsed (env order aside, see normalize). The e2e pair keeps the suite's
// values file and e2e/manifests (make demo, PODROLE_E2E_OVERLAY) from
// drifting apart.
func TestChartRendersKustomizeObjects(t *testing.T) {
	kubectl := kubetest.Kubectl(t)
	tests := []struct {
		name       string
		overlay    string // kustomization, from the repository root
		valueFiles []string
		values     string
	}{
		{name: "self-signed (defaults)", overlay: "manifests/overlays/self-signed"},
		{name: "cert-manager", overlay: "manifests/overlays/cert-manager", values: "certManager: {enabled: true}"},
		{name: "e2e", overlay: "e2e/manifests", valueFiles: []string{filepath.Join("..", "e2e", "values.yaml")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := objects(t, "kubectl kustomize "+tt.overlay, kubetest.Kustomize(t, kubectl, filepath.Join("..", tt.overlay)))
			got := objects(t, "chart", mustRender(t, tt.valueFiles, tt.values).manifests)
			if len(want) < 10 {
				t.Fatalf("kubectl kustomize %s: only %d objects", tt.overlay, len(want))
			}
			for _, key := range sortedKeys(want) {
				if _, ok := got[key]; !ok {
					t.Errorf("%s: in the overlay, not rendered by the chart", key)
					continue
				}
				if d := diff("", want[key], got[key]); len(d) > 0 {
					t.Errorf("%s differs:\n  %s", key, strings.Join(d, "\n  "))
				}
			}
			for _, key := range sortedKeys(got) {
				if _, ok := want[key]; !ok {
					t.Errorf("%s: rendered by the chart, not in the overlay", key)
				}
			}
		})
	}
}

// deployment returns the rendered webhook Deployment's pod spec pieces the
// values change.
func deployment(t *testing.T, objs map[string]map[string]any) map[string]any {
	t.Helper()
	d, ok := objs["apps/v1 Deployment podrole-system/podrole-webhook"]
	if !ok {
		t.Fatalf("no Deployment podrole-system/podrole-webhook in %v", sortedKeys(objs))
	}
	return d
}

// field follows a path of map keys and list indexes through a parsed object.
func field(obj any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := obj.(map[string]any)
			obj = m[k]
		case int:
			l, _ := obj.([]any)
			if k >= len(l) {
				return nil
			}
			obj = l[k]
		}
	}
	return obj
}

func envOf(container any) map[string]string {
	env := map[string]string{}
	for _, e := range field(container, "env").([]any) {
		env[field(e, "name").(string)] = fmt.Sprint(field(e, "value"))
	}
	return env
}

// TestChartValues: each documented value lands where values.yaml says.
func TestChartValues(t *testing.T) {
	webhook := []any{"spec", "template", "spec", "containers", 0}
	check := []any{"spec", "template", "spec", "initContainers", 0}
	tests := []struct {
		name   string
		values string
		check  func(t *testing.T, objs map[string]map[string]any)
	}{
		{"replicas", "replicas: 3", func(t *testing.T, objs map[string]map[string]any) {
			if got := field(deployment(t, objs), "spec", "replicas"); got != float64(3) {
				t.Errorf("replicas %v", got)
			}
		}},
		{"extraArgs are the container's args", "extraArgs: [--require-allowed-roles, --log-level=debug]", func(t *testing.T, objs map[string]map[string]any) {
			if got := compact(field(deployment(t, objs), append(webhook, "args")...)); got != "- --require-allowed-roles; - --log-level=debug" {
				t.Errorf("args %s", got)
			}
		}},
		{"flags are PODROLE_ variables, ports follow listen", `flags: {listen: "0.0.0.0:10443", probeListen: ":18080", source: web-identity, sidecarMode: legacy, region: eu-west-1, baseRoleArn: "arn:aws:iam::111122223333:role/"}`,
			func(t *testing.T, objs map[string]map[string]any) {
				c := field(deployment(t, objs), webhook...)
				env := envOf(c)
				for name, want := range map[string]string{
					"PODROLE_LISTEN": "0.0.0.0:10443", "PODROLE_PROBE_LISTEN": ":18080", "PODROLE_SOURCE": "web-identity",
					"PODROLE_SIDECAR_MODE": "legacy", "PODROLE_REGION": "eu-west-1", "PODROLE_BASE_ROLE_ARN": "arn:aws:iam::111122223333:role/",
				} {
					if env[name] != want {
						t.Errorf("%s=%q, want %q", name, env[name], want)
					}
				}
				if _, ok := env["PODROLE_STS_ENDPOINT"]; ok {
					t.Error("an empty flag is passed")
				}
				if got := compact(field(c, "ports")); got != "- containerPort: 10443;   name: https; - containerPort: 18080;   name: probes" {
					t.Errorf("ports %s", got)
				}
			}},
		{"sidecar image and pull policy: the check and the injected containers", "images: {sidecar: {repository: registry.example/podrole-sidecar, tag: v1.2.3, pullPolicy: Always}}",
			func(t *testing.T, objs map[string]map[string]any) {
				d := deployment(t, objs)
				env := envOf(field(d, webhook...))
				if got := field(d, append(check, "image")...); got != "registry.example/podrole-sidecar:v1.2.3" || env["PODROLE_SIDECAR_IMAGE"] != got {
					t.Errorf("sidecar-image-check image %v, PODROLE_SIDECAR_IMAGE %q", got, env["PODROLE_SIDECAR_IMAGE"])
				}
				if got := field(d, append(check, "imagePullPolicy")...); got != "Always" || env["PODROLE_SIDECAR_IMAGE_PULL_POLICY"] != "Always" {
					t.Errorf("sidecar-image-check pull policy %v, PODROLE_SIDECAR_IMAGE_PULL_POLICY %q", got, env["PODROLE_SIDECAR_IMAGE_PULL_POLICY"])
				}
			}},
		// Helm merges maps into the defaults; null removes a default.
		{"resources", "resources: {webhook: {requests: {cpu: 200m}, limits: null}}", func(t *testing.T, objs map[string]map[string]any) {
			if got := compact(field(deployment(t, objs), append(webhook, "resources")...)); got != "requests:;   cpu: 200m;   memory: 64Mi" {
				t.Errorf("resources %s", got)
			}
		}},
		{"PodDisruptionBudget percentage", `podDisruptionBudget: {minAvailable: "50%"}`, func(t *testing.T, objs map[string]map[string]any) {
			if got := field(objs["policy/v1 PodDisruptionBudget podrole-system/podrole-webhook"], "spec", "minAvailable"); got != "50%" {
				t.Errorf("minAvailable %v", got)
			}
		}},
		{"PodDisruptionBudget off", "podDisruptionBudget: {enabled: false}", func(t *testing.T, objs map[string]map[string]any) {
			if _, ok := objs["policy/v1 PodDisruptionBudget podrole-system/podrole-webhook"]; ok {
				t.Error("PodDisruptionBudget rendered")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, objects(t, "chart", mustRender(t, nil, tt.values).manifests))
		})
	}
}

// TestChartRefuses: values.schema.json and the templates turn away what
// would install something else than documented, with a message that says what.
func TestChartRefuses(t *testing.T) {
	tests := []struct {
		name, ns, values, want string
	}{
		{"unknown top-level key", releaseNamespace, "replica: 3", "additional properties 'replica' not allowed"},
		{"unknown flag (use extraArgs)", releaseNamespace, "flags: {requireAllowedRoles: true}", "additional properties 'requireAllowedRoles' not allowed"},
		{"image without a tag", releaseNamespace, `images: {webhook: {tag: ""}}`, "/images/webhook/tag"},
		{"image without a repository", releaseNamespace, `images: {sidecar: {repository: null}}`, "/images/sidecar"},
		{"bad pull policy", releaseNamespace, "images: {sidecar: {pullPolicy: Sometimes}}", "/images/sidecar/pullPolicy"},
		{"listen without a port", releaseNamespace, `flags: {listen: "localhost"}`, "/flags/listen"},
		{"unknown source", releaseNamespace, "flags: {source: instance}", "/flags/source"},
		{"no replicas", releaseNamespace, "replicas: 0", "/replicas"},
		{"extraArgs that are no flags", releaseNamespace, "extraArgs: [debug]", "/extraArgs/0"},
		{"release in podrole-system", "podrole-system", "", "install the release into another namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, tt.ns, nil, tt.values)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render with %q in namespace %s: %v, want an error containing %q", tt.values, tt.ns, err, tt.want)
			}
		})
	}
}

// TestChartNotes: NOTES.txt says what was installed and how to opt a
// namespace in.
func TestChartNotes(t *testing.T) {
	for _, tt := range []struct{ values, want string }{
		{"", "TLS: self-signed"},
		{"certManager: {enabled: true}", "TLS: cert-manager"},
	} {
		notes := mustRender(t, nil, tt.values).notes
		for _, want := range []string{tt.want, "namespace podrole-system", "kubectl label namespace <namespace> podrole.io/inject=enabled",
			"iam.amazonaws.com/role", "helm uninstall podrole --namespace " + releaseNamespace} {
			if !strings.Contains(notes, want) {
				t.Errorf("NOTES.txt with %q lacks %q:\n%s", tt.values, want, notes)
			}
		}
	}
}
