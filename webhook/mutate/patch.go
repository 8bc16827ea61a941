package mutate

import (
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// op is one RFC 6902 operation. Only "add" is used: the webhook never
// replaces or removes what the pod already has.
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

type patch []op

func (p *patch) add(path string, v any) { *p = append(*p, op{Op: "add", Path: path, Value: v}) }

// prependInit puts cs, in order, before the pod's own init containers.
func (p *patch) prependInit(pod *corev1.Pod, cs ...corev1.Container) {
	if len(pod.Spec.InitContainers) == 0 {
		p.add("/spec/initContainers", cs)
		return
	}
	for i, c := range cs {
		p.add("/spec/initContainers/"+itoa(i), c)
	}
}

// prependContainer puts c before the pod's containers (legacy mode: the
// kubelet starts regular containers in order).
func (p *patch) prependContainer(pod *corev1.Pod, c corev1.Container) {
	if len(pod.Spec.Containers) == 0 {
		p.add("/spec/containers", []corev1.Container{c})
		return
	}
	p.add("/spec/containers/0", c)
}

func (p *patch) appendVolume(pod *corev1.Pod, v corev1.Volume) {
	if len(pod.Spec.Volumes) == 0 {
		p.add("/spec/volumes", []corev1.Volume{v})
		return
	}
	p.add("/spec/volumes/-", v)
}

// annotate adds annotations, creating the map only when the pod has none.
func (p *patch) annotate(pod *corev1.Pod, kv map[string]string) {
	if len(pod.Annotations) == 0 {
		p.add("/metadata/annotations", kv)
		return
	}
	// Fixed order keeps patches stable for fixtures and logs.
	for _, k := range sortedKeys(kv) {
		p.add("/metadata/annotations/"+escape(k), kv[k])
	}
}

func (p patch) bytes() []byte {
	b, err := json.Marshal(p)
	if err != nil {
		// Only Kubernetes API types and strings go in: marshalling cannot fail.
		panic("mutate: marshal patch: " + err.Error())
	}
	return b
}

// prepend returns p's operations followed by those of b, an encoded patch
// (a cached one, say). b is not modified.
func (p patch) prepend(b []byte) []byte {
	if len(p) == 0 {
		return b
	}
	head := p.bytes()
	out := make([]byte, 0, len(head)+len(b))
	out = append(out, head[:len(head)-1]...)
	if rest := b[1:]; len(rest) > 1 { // b is "[...]"; "[]" adds nothing
		out = append(out, ',')
		out = append(out, rest...)
	} else {
		out = append(out, ']')
	}
	return out
}

// escape encodes a JSON Pointer reference token (RFC 6901): ~ then /.
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
