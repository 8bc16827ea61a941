package mutate

import (
	"fmt"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// ValidateUpdate decides a pod UPDATE (not a subresource) for the validating
// webhook. old is the stored pod, pod the update. An update may change
// little of a pod (images, some metadata, tolerations), but that is enough:
//   - podrole.io/status, podrole.io/role-arn and podrole.io/mode are
//     podrole's: adding, changing or removing them is refused on any pod
//     (the ephemeral and update checks, and people, rely on them);
//   - for a pod podrole injected or blocked, any change to podrole-init or
//     podrole-agent is refused (kubectl set image could swap the agent for
//     an image that serves the node's credentials with its capability), and
//     so is adding the podrole.io/inject=disabled label (it would take the
//     pod out of the mutating webhook's objectSelector);
//   - any other container that changed (a new image) must still pass the
//     container checks of creation: no network privileges, NET_RAW dropped
//     (or added under --allow-net-raw), no SYS_PTRACE with a shared process
//     namespace. Security contexts cannot change on update, so this refuses
//     only pods created before these checks, which must be re-created.
//
// Everything else (labels, annotations, finalizers, owner references) is
// allowed; nothing is patched.
func ValidateUpdate(old, pod *corev1.Pod, cfg Config) Result {
	if old == nil || pod == nil {
		return denied("the pod update carries no object or no oldObject, so podrole cannot check it; send both")
	}
	for _, k := range []string{contract.AnnotationStatus, contract.AnnotationRoleARN, contract.AnnotationMode} {
		ov, oh := old.Annotations[k]
		nv, nh := pod.Annotations[k]
		if oh == nh && ov == nv {
			continue
		}
		what := "changed"
		switch {
		case !oh:
			what = "added"
		case !nh:
			what = "removed"
		}
		return denied("pod %s: the %s annotation cannot be %s: podrole writes it when it creates the pod, and its checks of debug containers and updates rely on it; leave it as it is (to change a pod's role, create a new pod)",
			podName(pod), k, what)
	}
	if _, ok := protected(old, pod); !ok {
		return Result{Outcome: Skipped, Message: "podrole did not inject or block this pod"}
	}
	if podEnvMode(old) {
		cfg = cfg.inEnvMode()
	}
	if old.Labels[contract.LabelInject] != contract.InjectDisabled && pod.Labels[contract.LabelInject] == contract.InjectDisabled {
		return denied("pod %s: the label %s=%s cannot be added to a pod podrole injected or blocked: it would take the pod out of podrole's checks of debug containers; label the pod when you create it instead (it then gets no role and no metadata block)",
			podName(pod), contract.LabelInject, contract.InjectDisabled)
	}
	for _, l := range []struct {
		kind     string
		old, new []corev1.Container
	}{{"init container", old.Spec.InitContainers, pod.Spec.InitContainers}, {"container", old.Spec.Containers, pod.Spec.Containers}} {
		before := map[string]*corev1.Container{}
		for i := range l.old {
			before[l.old[i].Name] = &l.old[i]
		}
		after := map[string]bool{}
		for i := range l.new {
			c := &l.new[i]
			after[c.Name] = true
			b, existed := before[c.Name]
			if existed && equality.Semantic.DeepEqual(b, c) {
				continue
			}
			if isPodroleContainer(c.Name) {
				return denied("pod %s: %s %q cannot be changed (kubectl set image and edits included): %s; to run another podrole image, re-create the pod (it gets the webhook's current --sidecar-image)",
					podName(pod), l.kind, c.Name, podroleContainerRole(c.Name))
			}
			if p := networkPrivilege(c.SecurityContext, cfg.allowNetAdmin()); p.what != "" {
				return denied("%s %q of pod %s %s: %s", l.kind, c.Name, podName(pod), p.what, escapeRiskFor(cfg))
			}
			if d := containerDenial(l.kind, c.Name, c.SecurityContext, pod, cfg); d != "" {
				return denied("%s", d)
			}
			if needsNetRawDrop(c.SecurityContext, cfg) {
				return denied("%s %q of pod %s keeps NET_RAW (it does not drop it in securityContext.capabilities.drop), so its new image could send raw packets past podrole's rules to the node's instance metadata service; the pod was created before podrole dropped NET_RAW: re-create it to change its images",
					l.kind, c.Name, podName(pod))
			}
		}
		for name := range before {
			if isPodroleContainer(name) && !after[name] {
				return denied("pod %s: %s %q cannot be removed: %s", podName(pod), l.kind, name, podroleContainerRole(name))
			}
		}
	}
	return Result{Outcome: Skipped, Message: "the update leaves podrole's containers and annotations alone"}
}

// podroleContainerRole says why a podrole container must stay as injected.
func podroleContainerRole(name string) string {
	if name == contract.AgentContainerName {
		return fmt.Sprintf("%s serves the pod's role and, with --source=node, holds the capability that reaches the node's instance metadata service (the node role), so its image, command and settings are exactly what podrole injected", name)
	}
	return fmt.Sprintf("%s installs the pod's metadata rules, so it stays exactly what podrole injected", name)
}
