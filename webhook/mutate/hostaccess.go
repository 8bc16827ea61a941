package mutate

import (
	"fmt"
	"path"
	"strings"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// sensitiveHostPaths hold what a pod must not reach on its node: the
// kubelet's pod directories (other pods' service-account and web-identity
// tokens), the container runtimes' state and sockets (other containers'
// filesystems, and a socket that starts privileged containers), /proc and
// /sys (other processes, podrole agents' memory and environment among them),
// and the pod logs. A hostPath volume at one of them, below one, or above one
// ("/var" holds /var/lib/kubelet; "/" holds everything) is refused.
var sensitiveHostPaths = []string{
	"/proc", "/sys",
	"/var/lib/kubelet",
	"/var/lib/containerd", "/run/containerd", "/var/run/containerd",
	"/var/lib/docker", "/run/docker", "/var/run/docker.sock",
	"/run/crio", "/var/run/crio", "/var/lib/containers",
	"/var/log/pods", "/var/log/containers",
}

// sensitiveHostPath returns the sensitive path p is, lies under or contains.
// p is cleaned first (a relative path is taken from /, where the kubelet
// resolves it): "/var/lib/../lib/kubelet/" is /var/lib/kubelet.
func sensitiveHostPath(p string) (string, bool) {
	p = path.Clean("/" + p)
	if p == "/" {
		return "/", true
	}
	for _, s := range sensitiveHostPaths {
		if p == s || strings.HasPrefix(p, s+"/") || strings.HasPrefix(s, p+"/") {
			return s, true
		}
	}
	return "", false
}

// hostAccessRisk is why host access is refused, in every such message.
const hostAccessRisk = "it would let the pod read other pods' tokens and podrole agents' memory and credentials on the node"

// checkHostAccess refuses, unless --allow-host-access, a pod podrole injects
// or blocks that shares the node's process or IPC namespace, or mounts a
// sensitive host path. Its containers could then read what podrole keeps
// from them in other pods: the agents' memory and credentials, every pod's
// tokens. Messages name the field and the fix.
func checkHostAccess(pod *corev1.Pod, cfg Config) string {
	if cfg.AllowHostAccess {
		return ""
	}
	fix := fmt.Sprintf("or, if the pod must run unprotected, label it %s=%s (it then gets no role and no metadata block); a cluster admin can start the webhook with --allow-host-access, which weakens this for every pod",
		contract.LabelInject, contract.InjectDisabled)
	if pod.Spec.HostPID {
		return fmt.Sprintf("pod %s sets spec.hostPID: true: it sees every process of the node, and %s; remove hostPID, %s", podName(pod), hostAccessRisk, fix)
	}
	if pod.Spec.HostIPC {
		return fmt.Sprintf("pod %s sets spec.hostIPC: true: it shares the node's IPC namespace, and %s; remove hostIPC, %s", podName(pod), hostAccessRisk, fix)
	}
	for i, v := range pod.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		if s, bad := sensitiveHostPath(v.HostPath.Path); bad {
			return fmt.Sprintf("volume %q of pod %s mounts spec.volumes[%d].hostPath.path %q, which is, lies under or contains the node's %s: %s; use another volume type (emptyDir, configMap, a PersistentVolumeClaim) or a host path outside %s, %s",
				v.Name, podName(pod), i, v.HostPath.Path, s, hostAccessRisk, s, fix)
		}
	}
	return ""
}
