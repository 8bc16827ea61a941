package mutate

import (
	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// CheckEphemeral decides, for the mutating webhook, an UPDATE of a pod's
// ephemeralcontainers subresource (kubectl debug), which adds containers to
// a running pod without a pod CREATE. old is the stored pod (nil if the
// request carried none), pod the pod with the new list. For a pod podrole
// injected or blocked (status annotation, or a podrole-init container), each
// new ephemeral container is refused if it targets podrole-init or
// podrole-agent (it would share that container's processes), could rewrite
// the rules in the shared network namespace (privileged, NET_ADMIN,
// SYS_ADMIN or ALL; the same rules and --allow-net-admin as at creation),
// adds NET_RAW (unless --allow-net-raw), or adds SYS_PTRACE in a pod that
// shares one process namespace; one that keeps NET_RAW gets it dropped by
// the patch (outcome Patched). Otherwise the outcome is Skipped.
func CheckEphemeral(old, pod *corev1.Pod, cfg Config) Result {
	return checkEphemeral(old, pod, cfg, true)
}

// ValidateEphemeral is CheckEphemeral for the validating webhook, which
// sees the final object: a new ephemeral container that keeps NET_RAW is
// refused (the mutating webhook's drop is missing), and nothing is patched.
func ValidateEphemeral(old, pod *corev1.Pod, cfg Config) Result {
	return checkEphemeral(old, pod, cfg, false)
}

func checkEphemeral(old, pod *corev1.Pod, cfg Config, mutating bool) Result {
	if pod == nil {
		return denied("the ephemeralcontainers request carries no pod: send the v1 Pod as object")
	}
	if _, ok := protected(old, pod); !ok {
		return Result{Outcome: Skipped, Message: "pod has no " + contract.AnnotationStatus + " annotation and no " + contract.InitContainerName + " or " + contract.AgentContainerName + " container: podrole did not inject it"}
	}
	// The subresource cannot change metadata: old and pod record the same mode.
	if podEnvMode(pod) && (old == nil || podEnvMode(old)) {
		cfg = cfg.inEnvMode()
	}

	existing := map[string]*corev1.EphemeralContainer{}
	if old != nil {
		for i := range old.Spec.EphemeralContainers {
			existing[old.Spec.EphemeralContainers[i].Name] = &old.Spec.EphemeralContainers[i]
		}
	}
	var fresh []int // indexes of the new ephemeral containers
	for i := range pod.Spec.EphemeralContainers {
		c := &pod.Spec.EphemeralContainers[i]
		// Ephemeral containers cannot be changed or removed once added, so
		// only new ones are judged: one admitted before this check existed
		// must not block every later debug session. One whose security
		// context or target differs from the stored one is judged as new.
		if e, seen := existing[c.Name]; seen && e.TargetContainerName == c.TargetContainerName && equality.Semantic.DeepEqual(e.SecurityContext, c.SecurityContext) {
			continue
		}
		fresh = append(fresh, i)
		if t := c.TargetContainerName; isPodroleContainer(t) {
			return denied("ephemeral container %q of pod %s targets %s (targetContainerName, kubectl debug --target): it would share that container's processes, which hold the capability that reaches the node's instance metadata service (podrole-agent) or install the pod's metadata rules (podrole-init); debug an app container instead (kubectl debug --target=<app container>)",
				c.Name, podName(pod), t)
		}
		if p := networkPrivilege(c.SecurityContext, cfg.allowNetAdmin()); p.what != "" {
			return denied("ephemeral container %q of pod %s %s: %s; debug it without that (kubectl debug --profile=general, baseline or restricted adds none of them)",
				c.Name, podName(pod), p.what, escapeRiskFor(cfg))
		}
		if d := containerDenial("ephemeral container", c.Name, c.SecurityContext, pod, cfg); d != "" {
			return denied("%s", d)
		}
	}
	if len(fresh) > 0 {
		if d := checkTokenMounts(pod, cfg); d != "" {
			return denied("%s", d)
		}
	}
	// NET_RAW last, so that both webhooks refuse a dangerous container with
	// the same message whatever its position.
	var drops patch
	for _, i := range fresh {
		c := &pod.Spec.EphemeralContainers[i]
		if needsNetRawDrop(c.SecurityContext, cfg) {
			if !mutating {
				return denied("%s", netRawNotDropped("ephemeral container", c.Name, pod))
			}
			drops.dropNetRaw("/spec/ephemeralContainers/"+itoa(i), c.SecurityContext)
		}
	}
	if len(drops) > 0 {
		return Result{Outcome: Patched, Patch: drops.bytes(), Message: "NET_RAW dropped from new ephemeral containers"}
	}
	return Result{Outcome: Skipped, Message: "no new ephemeral container can undo podrole's metadata rules"}
}

// protected tells whether podrole injected or blocked the pod, and its
// status annotation. The subresource cannot change metadata, so old and new
// carry the same annotations; either having it is enough. Annotations can be
// edited by a plain pod update, though, while a pod's containers cannot be
// added or removed: a podrole-init or podrole-agent container (env mode has
// only the agent) marks the pod as ours even if someone removed the
// annotation to get a privileged debug container through.
func protected(old, pod *corev1.Pod) (status string, ok bool) {
	for _, p := range []*corev1.Pod{old, pod} {
		if p == nil {
			continue
		}
		if v, has := p.Annotations[contract.AnnotationStatus]; has {
			return v, true
		}
	}
	for _, p := range []*corev1.Pod{old, pod} {
		if p == nil {
			continue
		}
		if hasPodroleContainer(p) {
			return "", true
		}
	}
	return "", false
}
