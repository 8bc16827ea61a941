package mutate

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/podrole/podrole/contract"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// verifyInjected decides a pod created with podrole.io/status already set
// (a restore from backup, a manifest exported from a running pod, or the
// API server re-invoking the webhook after a later mutating webhook changed
// the pod it had just injected: reinvocationPolicy IfNeeded). Trusting
// the annotation would let anyone skip injection, or bring a hand-written
// podrole-agent with a role the namespace does not allow; so the pod is
// admitted unchanged only when its podrole containers are exactly what the
// webhook would inject for it now, and refused otherwise. Every check of a
// fresh pod (privileges, UIDs, role) runs again on the rest of the pod, so a
// container a later webhook added is judged as if the user had written it.
func verifyInjected(pod *corev1.Pod, ns Namespace, cfg Config) Result {
	stripped := pod.DeepCopy()
	delete(stripped.Annotations, contract.AnnotationStatus)
	delete(stripped.Annotations, contract.AnnotationRoleARN)
	ours := func(c corev1.Container) bool {
		return c.Name == contract.InitContainerName || c.Name == contract.AgentContainerName
	}
	stripped.Spec.InitContainers = slices.DeleteFunc(stripped.Spec.InitContainers, ours)
	stripped.Spec.Containers = slices.DeleteFunc(stripped.Spec.Containers, ours)
	stripped.Spec.Volumes = slices.DeleteFunc(stripped.Spec.Volumes, func(v corev1.Volume) bool {
		return strings.HasPrefix(v.Name, TokenVolumeName) && v.Projected != nil
	})

	res := Mutate(stripped, ns, cfg)
	switch res.Outcome {
	case Denied:
		return res
	case Skipped:
		// Nothing would be injected now (e.g. a hostNetwork pod): the
		// annotation grants nothing.
		return Result{Outcome: Skipped, Message: "pod already has " + contract.AnnotationStatus + " and needs no injection", Warnings: res.Warnings}
	}
	doc, err := json.Marshal(stripped)
	if err != nil {
		return denied("cannot re-encode the pod to check its %s annotation: %v", contract.AnnotationStatus, err)
	}
	p, err := jsonpatch.DecodePatch(res.Patch)
	if err == nil {
		doc, err = p.Apply(doc)
	}
	var want corev1.Pod
	if err == nil {
		err = json.Unmarshal(doc, &want)
	}
	if err != nil {
		return denied("cannot rebuild the injection to check the pod's %s annotation: %v", contract.AnnotationStatus, err)
	}
	if why := differs(pod, &want); why != "" {
		return denied("pod %s carries %s=%s but %s, so it is not what podrole injects for it (copied from another pod, edited, or changed by a later mutating webhook?); remove the %s and %s annotations and the %s/%s containers and create it again; if another mutating webhook changed them, make it leave %s and %s alone (and never put containers before them)",
			podName(pod), contract.AnnotationStatus, pod.Annotations[contract.AnnotationStatus], why,
			contract.AnnotationStatus, contract.AnnotationRoleARN, contract.InitContainerName, contract.AgentContainerName,
			contract.InitContainerName, contract.AgentContainerName)
	}
	return Result{Outcome: Skipped, Message: "pod already has " + contract.AnnotationStatus + " and its podrole containers match", RoleARN: res.RoleARN}
}

// differs compares what matters for protection: container order, the
// annotations podrole writes, and each podrole container's image, command,
// arguments, environment, ports, mounts, security context and restart
// policy. Fields the API server defaults (probes' thresholds, pull policy,
// termination message path) are not compared.
func differs(got, want *corev1.Pod) string {
	for _, k := range []string{contract.AnnotationStatus, contract.AnnotationRoleARN} {
		if got.Annotations[k] != want.Annotations[k] {
			return fmt.Sprintf("its %s annotation is %q, not %q", k, got.Annotations[k], want.Annotations[k])
		}
	}
	for _, l := range []struct {
		what      string
		got, want []corev1.Container
	}{{"init containers", got.Spec.InitContainers, want.Spec.InitContainers}, {"containers", got.Spec.Containers, want.Spec.Containers}} {
		if g, w := containerNames(l.got), containerNames(l.want); !slices.Equal(g, w) {
			return fmt.Sprintf("its %s are %v, not %v", l.what, g, w)
		}
		for i, w := range l.want {
			if w.Name != contract.InitContainerName && w.Name != contract.AgentContainerName {
				continue
			}
			g := l.got[i]
			for _, f := range []struct {
				field     string
				got, want any
			}{
				{"image", g.Image, w.Image}, {"command", g.Command, w.Command}, {"args", g.Args, w.Args},
				{"env", defaultEnv(g.Env), defaultEnv(w.Env)}, {"ports", g.Ports, w.Ports},
				{"securityContext", g.SecurityContext, w.SecurityContext}, {"restartPolicy", g.RestartPolicy, w.RestartPolicy},
			} {
				if !equality.Semantic.DeepEqual(f.got, f.want) {
					return fmt.Sprintf("its %s container's %s differs from the one podrole injects", w.Name, f.field)
				}
			}
			if why := mountsDiffer(g.VolumeMounts, w.VolumeMounts); why != "" {
				return fmt.Sprintf("its %s container's volumeMounts differ from the ones podrole injects: %s", w.Name, why)
			}
		}
	}
	return ""
}

// mountsDiffer allows mounts beyond ours, because in-tree admission plugins
// add them: with reinvocationPolicy IfNeeded the API server re-runs the
// ServiceAccount plugin after our patch, and it mounts the pod's API token
// into every container, ours included. Each mount podrole injects must be
// there unchanged, and no other mount may sit on, above or below one of its
// paths (that could swap the web-identity token the agent reads).
func mountsDiffer(got, want []corev1.VolumeMount) string {
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g corev1.VolumeMount) bool { return equality.Semantic.DeepEqual(g, w) }) {
			return fmt.Sprintf("%s is not mounted at %s as podrole mounts it", w.Name, w.MountPath)
		}
	}
	for _, g := range got {
		if slices.ContainsFunc(want, func(w corev1.VolumeMount) bool { return equality.Semantic.DeepEqual(g, w) }) {
			continue
		}
		for _, w := range want {
			if pathsOverlap(g.MountPath, w.MountPath) {
				return fmt.Sprintf("%s at %s overlaps podrole's mount at %s", g.Name, g.MountPath, w.MountPath)
			}
		}
	}
	return ""
}

// pathsOverlap reports whether a is b, or one lies below the other.
func pathsOverlap(a, b string) bool {
	a, b = strings.TrimSuffix(path.Clean(a), "/")+"/", strings.TrimSuffix(path.Clean(b), "/")+"/"
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// defaultEnv applies the API server's one default in our env entries
// (fieldRef.apiVersion v1), so a stored pod compares equal to a fresh patch.
func defaultEnv(env []corev1.EnvVar) []corev1.EnvVar {
	out := make([]corev1.EnvVar, len(env))
	for i, e := range env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.APIVersion == "" {
			e.ValueFrom = e.ValueFrom.DeepCopy()
			e.ValueFrom.FieldRef.APIVersion = "v1"
		}
		out[i] = e
	}
	return out
}
