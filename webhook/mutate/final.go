package mutate

import (
	"fmt"
	"slices"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// ValidateCreate decides a pod CREATE for the validating webhook, which
// sees the pod as it will be stored: after every mutating webhook (podrole's
// own, and any that ran after it) and the API server's defaults. It catches
// what the mutating webhook cannot: a patch another webhook undid, a pod
// that skipped podrole's mutating webhook (its objectSelector, a removed or
// misconfigured MutatingWebhookConfiguration), and containers added after
// podrole's last call. In a selected namespace:
//   - a pod carrying podrole.io/status must pass the re-verification of a
//     re-created pod (its podrole containers equal, field by field, what
//     podrole injects; every other check passes), and every other init and
//     regular container must drop NET_RAW (the mutating webhook adds the
//     drop; here its absence is a refusal);
//   - a pod without the status that the mutating webhook would inject or
//     block is refused: podrole did not inject it;
//   - a pod labelled podrole.io/inject=disabled must not carry podrole's
//     status or containers (a forged copy would otherwise skip both checks).
//
// The outcome is Skipped (allowed) or Denied; nothing is patched.
func ValidateCreate(pod *corev1.Pod, ns Namespace, cfg Config) Result {
	if ns.Labels[contract.LabelInject] != contract.InjectEnabled || ns.Name == "kube-system" {
		return Result{Outcome: Skipped, Message: fmt.Sprintf("namespace %q is not selected", ns.Name)}
	}
	status, hasStatus := pod.Annotations[contract.AnnotationStatus]
	ours := hasPodroleContainer(pod)
	if pod.Labels[contract.LabelInject] == contract.InjectDisabled {
		if hasStatus || ours {
			return denied("pod %s is labelled %s=%s but carries podrole's %s annotation or a %s/%s container, which podrole adds only to pods it injects; remove them (or the label, to have podrole inject it)",
				podName(pod), contract.LabelInject, contract.InjectDisabled, contract.AnnotationStatus, contract.InitContainerName, contract.AgentContainerName)
		}
		return Result{Outcome: Skipped, Message: "pod opted out"}
	}
	if hasStatus {
		res := verifyInjected(pod, ns, cfg)
		switch res.Outcome {
		case Denied:
			return res
		case Patched:
			if kind, name, v := missingEnv(pod); podEnvMode(pod) && name != "" {
				return denied("%s", envNotSet(kind, name, v, pod))
			}
			kind, name := missingNetRawDrop(pod, cfg)
			return denied("%s", netRawNotDropped(kind, name, pod))
		}
		return Result{Outcome: Skipped, Message: fmt.Sprintf("pod carries %s=%s and verifies", contract.AnnotationStatus, status), RoleARN: res.RoleARN}
	}
	// Without the status, Mutate refuses podrole's container names
	// ("reserved") and the rest of its checks apply as they are.
	res := Mutate(pod, ns, cfg)
	switch res.Outcome {
	case Denied:
		return res
	case Injected, Blocked, Patched:
		return denied("pod %s in namespace %q has no %s container and no %s annotation: podrole did not inject this pod (was the mutating webhook bypassed or its patch removed?); check that the MutatingWebhookConfiguration podrole-webhook exists and selects this namespace, and that no later webhook removes podrole's containers",
			podName(pod), ns.Name, injectedBy(res), contract.AnnotationStatus)
	}
	return Result{Outcome: Skipped, Message: res.Message}
}

func hasPodroleContainer(pod *corev1.Pod) bool {
	ours := func(c corev1.Container) bool { return isPodroleContainer(c.Name) }
	return slices.ContainsFunc(pod.Spec.InitContainers, ours) || slices.ContainsFunc(pod.Spec.Containers, ours)
}

// injectedBy names the container a pod Mutate would patch is missing:
// podrole-agent in env mode (there is no podrole-init), podrole-init otherwise.
func injectedBy(res Result) string {
	if res.env {
		return contract.AgentContainerName
	}
	return contract.InitContainerName
}
