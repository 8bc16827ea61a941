package mutate

import (
	"fmt"

	"github.com/podrole/podrole/contract"
)

// CheckConnect decides a CONNECT of pods/exec or pods/attach (subresource
// "exec" or "attach") into container of pod (its name). These requests carry
// the PodExecOptions or PodAttachOptions, not the pod, so the container name
// alone decides: a process started in (or attached to) podrole-agent would
// act with the agent's capability, which reaches the node's instance
// metadata service (the node role) with --source=node, and read the pod's
// credentials; podrole-init installs the pod's metadata rules with
// NET_ADMIN. The pod's author can exec into the app containers, which hold
// the pod's role anyway. An empty container is allowed: the API server then
// picks the pod's only regular container and refuses a pod with several,
// and podrole's containers are never a pod's only one (a legacy-mode agent
// sits beside the app).
func CheckConnect(subresource, pod, container string) Result {
	var why string
	switch container {
	case contract.AgentContainerName:
		why = "it holds the pod's credentials and, with --source=node, the capability that reaches the node's instance metadata service (the node role)"
	case contract.InitContainerName:
		why = "it installs the pod's metadata rules with NET_ADMIN and NET_RAW"
	default:
		return Result{Outcome: Skipped, Message: fmt.Sprintf("%s into container %q is not podrole's to judge", subresource, container)}
	}
	return denied("kubectl %s into container %q of pod %q is refused: %s; %s into the app's container instead (kubectl %s %s -c <app container>), which has the pod's role",
		subresource, container, pod, why, subresource, subresource, pod)
}
