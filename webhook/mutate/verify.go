package mutate

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"reflect"
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
// podrole-agent with a role the namespace does not allow, or a podrole-init
// told by an envFrom, a probe or a lifecycle hook to install nothing; so the
// pod is admitted only when its podrole containers are, field by field,
// exactly what the webhook would inject for it now, and refused otherwise.
// Every check of a fresh pod (privileges, host access, role) runs again on
// the rest of the pod, so a container a later webhook added is judged as if
// the user had written it; one that keeps NET_RAW gets it dropped (outcome
// Patched; the validating webhook refuses instead, see ValidateCreate).
func verifyInjected(pod *corev1.Pod, ns Namespace, cfg Config) Result {
	// Before stripping: the stripped pod loses podrole's token volume, so a
	// container mounting it would look like one mounting nothing.
	if d := checkTokenMounts(pod, cfg); d != "" {
		return denied("%s", d)
	}
	stripped := pod.DeepCopy()
	delete(stripped.Annotations, contract.AnnotationStatus)
	delete(stripped.Annotations, contract.AnnotationRoleARN)
	delete(stripped.Annotations, contract.AnnotationMode)
	ours := func(c corev1.Container) bool { return isPodroleContainer(c.Name) }
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
		// Nothing would be injected now (a hostNetwork pod, a pod without a
		// role in env mode): the annotation grants nothing, and podrole's
		// containers have no business there (a hand-written agent would
		// serve a role no allow-list checked).
		if hasPodroleContainer(pod) {
			return denied("pod %s carries %s=%s and a %s/%s container, but podrole injects nothing into it now (%s); remove the %s, %s and %s annotations and the %s/%s containers and create it again",
				podName(pod), contract.AnnotationStatus, pod.Annotations[contract.AnnotationStatus], contract.InitContainerName, contract.AgentContainerName, res.Message,
				contract.AnnotationStatus, contract.AnnotationRoleARN, contract.AnnotationMode, contract.InitContainerName, contract.AgentContainerName)
		}
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
	// A container a later webhook added after podrole's patch keeps NET_RAW
	// unless it is dropped now, or in env mode lacks the variables pointing
	// it at the agent unless they are added now (outcome Patched, not a
	// refusal: the later webhook did nothing wrong). The mode is the one the
	// pod's annotation now matches (differs checked it).
	fix, what := netRawPatch(pod, cfg), "NET_RAW dropped from"
	if want.Annotations[contract.AnnotationMode] == contract.ModeEnv {
		// Mutate chose the agent's port on the stripped pod; it succeeded.
		port, _, _ := choosePorts(stripped, cfg)
		fix, _ = envPatch(pod, port)
		what = contract.EnvMetadataEndpoint + " and " + contract.EnvMetadataEndpointMode + " added to"
	}
	if len(fix) > 0 {
		return Result{Outcome: Patched, Patch: fix.bytes(), RoleARN: res.RoleARN, Warnings: res.Warnings,
			Message: "pod already has " + contract.AnnotationStatus + " and its podrole containers match; " + what + " containers added after injection"}
	}
	return Result{Outcome: Skipped, Message: "pod already has " + contract.AnnotationStatus + " and its podrole containers match", RoleARN: res.RoleARN, Warnings: res.Warnings}
}

// differs compares container order, the annotations podrole writes, and
// each podrole container whole: every field of corev1.Container, after the
// API server's defaults are applied to both sides (defaultContainer). Three
// differences are tolerated because in-tree admission plugins make them
// after podrole's patch (with reinvocationPolicy IfNeeded the API server
// re-runs them), and none gives another container anything:
//   - the ServiceAccount plugin's read-only API token mount, which it adds
//     to every container (see mountsDiffer); no other mount;
//   - resource requests and limits of resources podrole does not set
//     (LimitRanger fills a namespace's defaults into every container; see
//     resourcesDiffer); every quantity podrole sets must be unchanged;
//   - imagePullPolicy Always (the AlwaysPullImages plugin sets it on every
//     container; it pulls the same image reference).
//
// Anything else (envFrom, env, probes, lifecycle, ports, securityContext,
// workingDir, stdin, resizePolicy, restart rules, a field added to the API
// later...) must be equal.
//
// A pod without podrole.io/mode counts as redirect mode: pods injected before
// podrole recorded the mode carry none, and podrole-init is compared whole.
func differs(got, want *corev1.Pod) string {
	for _, k := range []string{contract.AnnotationStatus, contract.AnnotationRoleARN, contract.AnnotationMode} {
		g, ok := got.Annotations[k]
		if k == contract.AnnotationMode && !ok {
			g = contract.ModeRedirect
		}
		if g != want.Annotations[k] {
			return fmt.Sprintf("its %s annotation is %q, not %q", k, g, want.Annotations[k])
		}
	}
	for _, l := range []struct {
		what      string
		got, want []corev1.Container
	}{{"init containers", got.Spec.InitContainers, want.Spec.InitContainers}, {"containers", got.Spec.Containers, want.Spec.Containers}} {
		if g, w := containerNames(l.got), containerNames(l.want); !slices.Equal(g, w) {
			return fmt.Sprintf("its %s are %v, not %v", l.what, g, w)
		}
		for i := range l.want {
			if !isPodroleContainer(l.want[i].Name) {
				continue
			}
			if why := containerDiffers(&l.got[i], &l.want[i], got.Spec.Volumes); why != "" {
				return fmt.Sprintf("its %s container's %s", l.want[i].Name, why)
			}
			// The volumes behind podrole's mounts (the web-identity token)
			// must be podrole's too: a projected ConfigMap named like the
			// token volume would hand the agent a token of the pod's choice.
			for _, m := range l.want[i].VolumeMounts {
				if why := volumeDiffers(got.Spec.Volumes, want.Spec.Volumes, m.Name); why != "" {
					return fmt.Sprintf("its volume %q (mounted by %s) %s", m.Name, l.want[i].Name, why)
				}
			}
		}
	}
	return ""
}

// volumeDiffers compares the volume named name in got and want, after the
// API server's defaults for projected volumes.
func volumeDiffers(got, want []corev1.Volume, name string) string {
	find := func(vs []corev1.Volume) *corev1.Volume {
		for i := range vs {
			if vs[i].Name == name {
				v := vs[i].DeepCopy()
				defaultVolume(v)
				return v
			}
		}
		return nil
	}
	g, w := find(got), find(want)
	switch {
	case g == nil:
		return "is missing"
	case !equality.Semantic.DeepEqual(g, w):
		return "differs from the one podrole injects"
	}
	return ""
}

// containerType lists corev1.Container's fields once, for containerDiffers.
var containerType = reflect.TypeFor[corev1.Container]()

// containerDiffers names the first field of got that differs from want
// (see differs for the three tolerated differences), or "". volumes are
// got's pod's.
func containerDiffers(got, want *corev1.Container, volumes []corev1.Volume) string {
	g, w := got.DeepCopy(), want.DeepCopy()
	defaultContainer(g)
	defaultContainer(w)
	gv, wv := reflect.ValueOf(g).Elem(), reflect.ValueOf(w).Elem()
	for i := range containerType.NumField() {
		f := containerType.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch f.Name {
		case "VolumeMounts":
			if why := mountsDiffer(g.VolumeMounts, w.VolumeMounts, volumes); why != "" {
				return "volumeMounts differ from the ones podrole injects: " + why
			}
			continue
		case "Resources":
			if why := resourcesDiffer(g.Resources, w.Resources); why != "" {
				return "resources differ from the ones podrole injects: " + why
			}
			continue
		case "ImagePullPolicy":
			if g.ImagePullPolicy == corev1.PullAlways {
				continue
			}
		}
		if !equality.Semantic.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			return name + " differs from the one podrole injects"
		}
	}
	return ""
}

// resourcesDiffer requires every request and limit podrole sets, unchanged,
// and the same resource claims; other resources may have been added (the
// LimitRanger plugin fills a namespace's LimitRange defaults into every
// container, podrole's included). Those only constrain podrole's own
// container in the pod that carries it.
func resourcesDiffer(got, want corev1.ResourceRequirements) string {
	for _, l := range []struct {
		what      string
		got, want corev1.ResourceList
	}{{"requests", got.Requests, want.Requests}, {"limits", got.Limits, want.Limits}} {
		for _, k := range slices.Sorted(maps.Keys(l.want)) {
			w := l.want[k]
			if g, ok := l.got[k]; !ok || g.Cmp(w) != 0 {
				return fmt.Sprintf("%s.%s is %q, not %q", l.what, k, quantityString(l.got, k), w.String())
			}
		}
	}
	if !equality.Semantic.DeepEqual(got.Claims, want.Claims) {
		return "claims differ"
	}
	return ""
}

func quantityString(l corev1.ResourceList, k corev1.ResourceName) string {
	if q, ok := l[k]; ok {
		return q.String()
	}
	return ""
}

// serviceAccountMountPath is where the ServiceAccount admission plugin
// mounts the pod's API token into every container.
const serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// mountsDiffer requires each mount podrole injects, unchanged, and allows
// one more: the ServiceAccount plugin's. With reinvocationPolicy IfNeeded the
// API server re-runs that plugin after podrole's patch, and it mounts the
// pod's API token (a projected volume) read-only at serviceAccountMountPath
// into every container, podrole's included. Any other mount is refused: a
// ConfigMap with an executable "iptables-restore" mounted over podrole-init's
// binaries would install no rules. volumes are the pod's.
func mountsDiffer(got, want []corev1.VolumeMount, volumes []corev1.Volume) string {
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g corev1.VolumeMount) bool { return equality.Semantic.DeepEqual(g, w) }) {
			return fmt.Sprintf("%s is not mounted at %s as podrole mounts it", w.Name, w.MountPath)
		}
	}
	// Which volumes are projected, looked up once: a pod may hold
	// thousands of mounts and volumes, and comparing every mount with every
	// volume would take seconds.
	var projected map[string]bool
	for _, g := range got {
		if slices.ContainsFunc(want, func(w corev1.VolumeMount) bool { return equality.Semantic.DeepEqual(g, w) }) {
			continue
		}
		if projected == nil {
			projected = make(map[string]bool, len(volumes))
			for i := range volumes {
				if _, seen := projected[volumes[i].Name]; !seen {
					// The first volume of a name is the one IndexFunc found.
					projected[volumes[i].Name] = volumes[i].Projected != nil
				}
			}
		}
		if !serviceAccountMount(g, projected) {
			return fmt.Sprintf("%s at %s is not a mount podrole injects (only the ServiceAccount admission plugin's read-only API token mount at %s is tolerated)", g.Name, g.MountPath, serviceAccountMountPath)
		}
	}
	return ""
}

// serviceAccountMount reports whether m is the ServiceAccount plugin's:
// read-only at serviceAccountMountPath, the whole of a projected volume, no
// mount propagation. Such a mount overlaps none of podrole's paths.
// projected says, for each volume name of the pod (its first volume of that
// name), whether it is a projected volume.
func serviceAccountMount(m corev1.VolumeMount, projected map[string]bool) bool {
	if path.Clean(m.MountPath) != serviceAccountMountPath || !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" ||
		(m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone) {
		return false
	}
	return projected[m.Name]
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}
