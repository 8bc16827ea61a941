package mutate

import (
	"flag"
	"io"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// CheckEphemeral decides an UPDATE of a pod's ephemeralcontainers
// subresource (kubectl debug), which adds containers to a running pod
// without a pod CREATE. old is the stored pod (nil if the request carried
// none), pod the pod with the new list. For a pod podrole injected or
// blocked (status annotation, or a podrole-init container), a new ephemeral
// container is refused if it could rewrite the redirect in the shared
// network namespace (privileged, NET_ADMIN, SYS_ADMIN or ALL; the same rules
// and --allow-net-admin as at creation), or runs as the agent's UID, which
// the redirect exempts. Everything else is allowed unchanged: the outcome is
// Skipped or Denied, never a patch.
func CheckEphemeral(old, pod *corev1.Pod, cfg Config) Result {
	if pod == nil {
		return denied("the ephemeralcontainers request carries no pod: send the v1 Pod as object")
	}
	status, ok := protected(old, pod)
	if !ok {
		return Result{Outcome: Skipped, Message: "pod has no " + contract.AnnotationStatus + " annotation and no " + contract.InitContainerName + " container: podrole did not inject it"}
	}
	agentUIDs := agentUIDs(old, pod, status, cfg)

	existing := map[string]*corev1.SecurityContext{}
	if old != nil {
		for _, c := range old.Spec.EphemeralContainers {
			existing[c.Name] = c.SecurityContext
		}
	}
	podSC := pod.Spec.SecurityContext
	for _, c := range pod.Spec.EphemeralContainers {
		// Ephemeral containers cannot be changed or removed once added, so
		// only new ones are judged: one admitted before this check existed
		// must not block every later debug session. One whose security
		// context differs from the stored one is judged as new.
		if sc, seen := existing[c.Name]; seen && equality.Semantic.DeepEqual(sc, c.SecurityContext) {
			continue
		}
		if p := networkPrivilege(c.SecurityContext, cfg.AllowNetAdmin); p.what != "" {
			return denied("ephemeral container %q of pod %s %s: %s; debug it without that (kubectl debug --profile=general, baseline or restricted adds none of them)",
				c.Name, podName(pod), p.what, escapeRisk)
		}
		// Without its own runAsUser the container runs as the pod's.
		var uid *int64
		switch {
		case c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil:
			uid = c.SecurityContext.RunAsUser
		case podSC != nil && podSC.RunAsUser != nil:
			uid = podSC.RunAsUser
		}
		if uid != nil && agentUIDs[*uid] {
			return denied("ephemeral container %q of pod %s runs as UID %d, the UID of %s, which podrole-init exempts from the metadata redirect: it could reach the node's instance metadata service (the node role); set securityContext.runAsUser to another UID",
				c.Name, podName(pod), *uid, contract.AgentContainerName)
		}
	}
	return Result{Outcome: Skipped, Message: "no new ephemeral container can undo podrole's metadata rules"}
}

// agentUIDs are the UIDs the pod's redirect exempts, if it has an agent:
// the configured one, the one its podrole-agent runs as, and the one
// podrole-init was told to exclude (both may predate a --sidecar-uid change).
func agentUIDs(old, pod *corev1.Pod, status string, cfg Config) map[int64]bool {
	uids := map[int64]bool{}
	agent := status == contract.StatusInjected
	for _, p := range []*corev1.Pod{old, pod} {
		if p == nil {
			continue
		}
		for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			switch c.Name {
			case contract.AgentContainerName:
				agent = true
				if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
					uids[*c.SecurityContext.RunAsUser] = true
				}
			case contract.InitContainerName:
				if uid, ok := excludeUID(c.Args); ok {
					uids[uid] = true
				}
			}
		}
	}
	if !agent {
		// Block mode rejects metadata traffic from every UID.
		return nil
	}
	uids[int64(cfg.SidecarUID)] = true
	return uids
}

// protected tells whether podrole injected or blocked the pod, and its
// status annotation. The subresource cannot change metadata, so old and new
// carry the same annotations; either having it is enough. Annotations can be
// edited by a plain pod update, though, while a pod's init containers cannot
// change: a podrole-init container marks the pod as ours even if someone
// removed the annotation to get a privileged debug container through.
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
		for _, c := range p.Spec.InitContainers {
			if c.Name == contract.InitContainerName {
				return "", true
			}
		}
	}
	return "", false
}

// excludeUID reads --exclude-uid from podrole-init's arguments as the
// sidecar would parse them; ok is false if they do not parse.
func excludeUID(args []string) (uid int64, ok bool) {
	if len(args) == 0 || args[0] != "init" {
		return 0, false
	}
	ic := contract.DefaultInitConfig()
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ic.RegisterFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 0, false
	}
	return int64(ic.ExcludeUID), true
}
