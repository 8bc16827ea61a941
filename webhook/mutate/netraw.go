package mutate

import (
	"fmt"
	"strings"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// NET_RAW is in every container runtime's default capability set. A process
// holding it can open a packet socket (AF_PACKET) and write Ethernet frames
// to the pod's interface: netfilter never sees them, so podrole-init's rules
// cannot stop a hand-built TCP stream to 169.254.169.254. It also lets a
// process set a socket mark (SO_MARK, Linux 5.17+), and a mark is what
// podrole-init exempts for the agent. So every container of an injected or
// blocked pod other than podrole's own loses NET_RAW: the webhook adds it to
// securityContext.capabilities.drop (refusing would refuse nearly every pod,
// since the runtimes add it by default), and refuses containers that add it
// back, unless --allow-net-raw.

// netRawDrop is what the patch adds to a container's capabilities.drop.
const netRawDrop corev1.Capability = "NET_RAW"

// dropsNetRaw reports whether sc's capabilities.drop removes NET_RAW as
// every runtime reads it. Unlike canonicalCapability (used for what a
// container adds, where any spelling a runtime might honour must count),
// only "NET_RAW" and "ALL" in any case count here: containerd prefixes
// "CAP_" to the upper-cased name, so a drop of "CAP_NET_RAW" becomes
// CAP_CAP_NET_RAW and drops nothing; CRI-O keeps a "cap_" name as written.
// When in doubt the webhook adds its own "NET_RAW", which costs nothing.
func dropsNetRaw(sc *corev1.SecurityContext) bool {
	if sc == nil || sc.Capabilities == nil {
		return false
	}
	for _, c := range sc.Capabilities.Drop {
		if u := strings.ToUpper(string(c)); u == "NET_RAW" || u == "ALL" {
			return true
		}
	}
	return false
}

// addedCapability returns how sc's capabilities.add spells canon (any case,
// with or without "CAP_"), if it adds it.
func addedCapability(sc *corev1.SecurityContext, canon string) (string, bool) {
	if sc == nil || sc.Capabilities == nil {
		return "", false
	}
	for _, c := range sc.Capabilities.Add {
		if canonicalCapability(string(c)) == canon {
			return string(c), true
		}
	}
	return "", false
}

// capabilityName is `"cap_net_raw" (NET_RAW)`, or `"NET_RAW"` when spelled canonically.
func capabilityName(spelled, canon string) string {
	if spelled == canon {
		return fmt.Sprintf("%q", spelled)
	}
	return fmt.Sprintf("%q (%s)", spelled, canon)
}

// needsNetRawDrop reports whether the webhook must add NET_RAW to sc's drop
// list: it does not drop it already, and it does not add it under
// --allow-net-raw (a container admitted with NET_RAW keeps it).
//
// In env mode nothing needs it dropped: there are no rules to get past, and
// an app reaches whatever the node's metadata service answers anyway.
func needsNetRawDrop(sc *corev1.SecurityContext, cfg Config) bool {
	if cfg.env || dropsNetRaw(sc) {
		return false
	}
	_, adds := addedCapability(sc, "NET_RAW")
	return !adds || !cfg.AllowNetRaw
}

// netRawRisk is why NET_RAW is taken away, in every such message.
const netRawRisk = "raw packet sockets bypass netfilter, so it could reach the node's instance metadata service (the node role) past podrole's rules"

// containerDenial is the verdict on one container (init, regular or
// ephemeral) of a pod podrole injects or blocks, beyond the network
// privileges of networkPrivilege: adding NET_RAW (unless --allow-net-raw),
// and adding SYS_PTRACE in a pod that shares one process namespace, where it
// could trace podrole-agent (or podrole-init while it runs) and act with its
// capability and credentials. "" when the container is fine.
func containerDenial(kind, name string, sc *corev1.SecurityContext, pod *corev1.Pod, cfg Config) string {
	if spelled, ok := addedCapability(sc, "NET_RAW"); ok && !cfg.AllowNetRaw && !cfg.env {
		return fmt.Sprintf("%s %q of pod %s adds capability %s to securityContext.capabilities.add: %s; remove it (podrole drops NET_RAW from every container of the pod), or a cluster admin can start the webhook with --allow-net-raw, which weakens this for every pod",
			kind, name, podName(pod), capabilityName(spelled, "NET_RAW"), netRawRisk)
	}
	if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		if spelled, ok := addedCapability(sc, "SYS_PTRACE"); ok {
			return fmt.Sprintf("%s %q of pod %s adds capability %s while the pod sets shareProcessNamespace: true: it could trace %s and %s, which hold the pod's credentials and the capabilities podrole keeps from every other container; remove SYS_PTRACE from securityContext.capabilities.add or set shareProcessNamespace: false",
				kind, name, podName(pod), capabilityName(spelled, "SYS_PTRACE"), contract.AgentContainerName, contract.InitContainerName)
		}
	}
	return ""
}

// checkContainers runs containerDenial on every container of pod that is
// not podrole's (podrole-init and podrole-agent are checked by comparing them
// whole with what podrole injects).
func checkContainers(pod *corev1.Pod, cfg Config) string {
	return firstDenial(pod, func(kind, name string, sc *corev1.SecurityContext) string {
		if isPodroleContainer(name) && kind != "ephemeral container" {
			return ""
		}
		return containerDenial(kind, name, sc, pod, cfg)
	})
}

func isPodroleContainer(name string) bool {
	return name == contract.InitContainerName || name == contract.AgentContainerName
}

// netRawPatch adds NET_RAW to the drop list of every init and regular
// container of pod that needs it (see needsNetRawDrop), at their current
// indexes: these operations must come before any that insert containers.
// podrole's own containers are skipped. Ephemeral containers cannot exist at
// creation; see ephemeralNetRawPatch.
func netRawPatch(pod *corev1.Pod, cfg Config) patch {
	var p patch
	for _, l := range []struct {
		path string
		cs   []corev1.Container
	}{{"/spec/initContainers/", pod.Spec.InitContainers}, {"/spec/containers/", pod.Spec.Containers}} {
		for i := range l.cs {
			if c := &l.cs[i]; !isPodroleContainer(c.Name) && needsNetRawDrop(c.SecurityContext, cfg) {
				p.dropNetRaw(l.path+itoa(i), c.SecurityContext)
			}
		}
	}
	return p
}

// dropNetRaw adds NET_RAW to the drop list of the container at prefix whose
// security context is sc, creating only what is missing: the API server
// applies the patch to its own serialization, where nil and empty fields are
// absent.
func (p *patch) dropNetRaw(prefix string, sc *corev1.SecurityContext) {
	drop := []corev1.Capability{netRawDrop}
	switch {
	case sc == nil:
		p.add(prefix+"/securityContext", corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: drop}})
	case sc.Capabilities == nil:
		p.add(prefix+"/securityContext/capabilities", corev1.Capabilities{Drop: drop})
	case len(sc.Capabilities.Drop) == 0:
		p.add(prefix+"/securityContext/capabilities/drop", drop)
	default:
		p.add(prefix+"/securityContext/capabilities/drop/-", netRawDrop)
	}
}

// missingNetRawDrop names the first non-podrole init or regular container
// that keeps NET_RAW without --allow-net-raw admitting it, or "".
func missingNetRawDrop(pod *corev1.Pod, cfg Config) (kind, name string) {
	for _, c := range pod.Spec.InitContainers {
		if !isPodroleContainer(c.Name) && needsNetRawDrop(c.SecurityContext, cfg) {
			return "init container", c.Name
		}
	}
	for _, c := range pod.Spec.Containers {
		if !isPodroleContainer(c.Name) && needsNetRawDrop(c.SecurityContext, cfg) {
			return "container", c.Name
		}
	}
	return "", ""
}

// netRawNotDropped is the validating webhook's denial for a container the
// mutating webhook should have taken NET_RAW from.
func netRawNotDropped(kind, name string, pod *corev1.Pod) string {
	return fmt.Sprintf("%s %q of pod %s does not drop NET_RAW (securityContext.capabilities.drop): %s. podrole's mutating webhook adds the drop; it is missing, so that webhook was bypassed or a later one changed the container: add NET_RAW (or ALL) to its securityContext.capabilities.drop",
		kind, name, podName(pod), netRawRisk)
}
