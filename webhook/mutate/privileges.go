package mutate

import (
	"fmt"
	"strings"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// checkNetworkPrivileges refuses pods with a container (init, regular or
// ephemeral) that could rewrite the netfilter rules podrole-init installs in
// the pod's shared network namespace: privileged, or adding NET_ADMIN,
// SYS_ADMIN or ALL. The pod's own init containers run after podrole-init, so
// even they could undo it. Such a container could then reach the node's
// metadata service and the node role, so the pod cannot be protected, whether
// it gets an agent or only the block step. With allowNetAdmin, NET_ADMIN alone
// is let through (service mesh init containers need it).
//
// NET_RAW is handled apart (netraw.go): it is in the runtimes' default set,
// so it is dropped from every container rather than refused, and refused
// only when a container adds it.
//
// In env mode (cfg.env) there are no rules: NET_ADMIN is admitted, and the
// rest is refused because it reaches the node (see inEnvMode).
func checkNetworkPrivileges(pod *corev1.Pod, cfg Config) string {
	allowNetAdmin, risk := cfg.allowNetAdmin(), escapeRiskFor(cfg)
	optOut := fmt.Sprintf("or, if the pod must run unprotected, label it %s=%s (it then gets no role and no metadata block)",
		contract.LabelInject, contract.InjectDisabled)
	check := func(kind, name string, sc *corev1.SecurityContext) string {
		p := networkPrivilege(sc, allowNetAdmin)
		switch {
		case p.what == "":
			return ""
		case p.privileged:
			return fmt.Sprintf("%s %q of pod %s %s: %s; set privileged: false and add only the capabilities it needs, %s",
				kind, name, podName(pod), p.what, risk, optOut)
		}
		msg := fmt.Sprintf("%s %q of pod %s %s: %s; drop it from securityContext.capabilities.add, %s",
			kind, name, podName(pod), p.what, risk, optOut)
		if p.netAdmin {
			msg += "; for service mesh init containers a cluster admin can start the webhook with --allow-net-admin"
		}
		return msg
	}
	return firstDenial(pod, check)
}

// escapeRisk is why a network privilege is refused, in every such denial.
const escapeRisk = "it could delete podrole's metadata rules in the pod's network namespace and reach the node's instance metadata service (the node role)"

// privilege is what in a container's security context could rewrite the
// pod's netfilter rules.
type privilege struct {
	// what is "is privileged" or `adds capability "cap_net_admin" (NET_ADMIN)`;
	// empty when the container has no such privilege.
	what       string
	privileged bool
	// netAdmin: the capability is NET_ADMIN, which --allow-net-admin admits.
	netAdmin bool
}

// networkPrivilege is the one place that decides which security contexts
// are dangerous, for pod creation and for ephemeral containers alike.
func networkPrivilege(sc *corev1.SecurityContext, allowNetAdmin bool) privilege {
	if sc == nil {
		return privilege{}
	}
	if sc.Privileged != nil && *sc.Privileged {
		return privilege{what: "is privileged", privileged: true}
	}
	if sc.Capabilities == nil {
		return privilege{}
	}
	for _, c := range sc.Capabilities.Add {
		canon := canonicalCapability(string(c))
		switch canon {
		case "NET_ADMIN":
			if allowNetAdmin {
				continue
			}
		case "SYS_ADMIN", "ALL":
		default:
			continue
		}
		what := fmt.Sprintf("%q", string(c))
		if canon != string(c) {
			what += " (" + canon + ")"
		}
		return privilege{what: "adds capability " + what, netAdmin: canon == "NET_ADMIN"}
	}
	return privilege{}
}

// canonicalCapability names a capability the way the container runtimes
// read it: case-insensitive, with or without the "CAP_" prefix ("cap_sys_admin"
// and "Sys_Admin" both grant SYS_ADMIN).
func canonicalCapability(c string) string {
	c = strings.ToUpper(c)
	if strings.HasPrefix(c, "CAP_") {
		return c[len("CAP_"):]
	}
	return c
}
