package mutate

import (
	"fmt"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// checkTokenMounts refuses, with --source=web-identity, a container other
// than podrole-agent that mounts a volume projecting a service-account token
// for STS (audience sts.amazonaws.com): podrole's own token volume under any
// name (a pod may declare its own "podrole-token" so that podrole's becomes
// "podrole-token-1"), or one the pod projects itself. With that token a
// container could call sts:AssumeRoleWithWebIdentity for any role that
// trusts the pod's service account, past the namespace's allow-list and the
// agent. Roles' trust policies must still pin "sub" (README): a principal
// allowed to request tokens (serviceaccounts/token) is outside this check.
func checkTokenMounts(pod *corev1.Pod, cfg Config) string {
	if cfg.Source != contract.SourceWebIdentity {
		return ""
	}
	sts := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if projectsSTSToken(v) {
			sts[v.Name] = true
		}
	}
	if len(sts) == 0 {
		return ""
	}
	return firstContainerDenial(pod, func(kind, name string, _ *corev1.SecurityContext, mounts []corev1.VolumeMount) string {
		if kind != "ephemeral container" && name == contract.AgentContainerName {
			return ""
		}
		for _, m := range mounts {
			if sts[m.Name] {
				return fmt.Sprintf("%s %q of pod %s mounts volume %q, a service-account token for %s: with it the container could assume roles past podrole's agent and the namespace's allow-list; remove the mount (podrole's agent is the only container that gets this token, and serves the pod's role through the instance metadata API)",
					kind, name, podName(pod), m.Name, contract.TokenAudience)
			}
		}
		return ""
	})
}

// projectsSTSToken reports whether v is a projected volume with a
// service-account token for the STS audience.
func projectsSTSToken(v corev1.Volume) bool {
	if v.Projected == nil {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == contract.TokenAudience {
			return true
		}
	}
	return false
}
