package mutate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
)

// Env mode: how pods in namespaces that enforce the baseline or restricted
// Pod Security Standard get their role. Pod Security admission has no
// per-container exemption, and podrole-init needs root with NET_ADMIN and
// NET_RAW, which both levels refuse. So there podrole injects only the
// agent, restricted-compliant (non-root --sidecar-uid, no capability, no
// privilege escalation, RuntimeDefault seccomp, read-only root), and points
// every app container and app init container at it with the variables every
// AWS SDK and the AWS CLI read. Nothing stops a process that calls
// 169.254.169.254 itself: the node must refuse pods (IMDS HttpTokens=required
// with hop limit 1), and every env-mode injection says so in a warning.
//
// The names users see (the podrole.io/mode annotation, the mode values, the
// variables) are in package contract.

// podSecurityPrivileged is the one Pod Security level that admits podrole-init.
const podSecurityPrivileged = "privileged"

// envNodeSourceRisk is why env mode with --source=node is refused unless
// --allow-env-mode-node-source.
const envNodeSourceRisk = "env mode installs no rules, so an agent with --source=node reads the node's instance metadata service like any process of the pod: the node must answer pods, which lets every app of the pod reach the node role"

// envRemedy is the node setting that closes what env mode leaves open.
const envRemedy = "make the nodes refuse pods: instance metadata HttpTokens=required with HttpPutResponseHopLimit=1 (a hop limit alone still lets IMDSv1 GETs through)"

// modeChoice is the mode of a pod and why, for messages.
type modeChoice struct {
	mode string // contract.ModeRedirect or contract.ModeEnv
	why  string
}

// chooseMode decides the mode of ns's pods: the namespace's podrole.io/mode
// annotation (a cluster admin's: pods cannot choose) wins over --mode; with
// --mode=auto, env where the namespace's Pod Security enforce label is
// anything but "privileged" (baseline, restricted, or a value Pod Security
// admission cannot parse, which it enforces as restricted), redirect
// elsewhere. Without the label podrole cannot see a cluster-wide Pod Security
// default: such namespaces get redirect (set the label or the annotation).
// A malformed annotation is a denial naming it, for every pod of ns.
func chooseMode(ns Namespace, cfg Config) (modeChoice, string) {
	if v, ok := ns.Annotations[contract.AnnotationMode]; ok {
		switch v {
		case contract.ModeRedirect, contract.ModeEnv:
			return modeChoice{v, fmt.Sprintf("namespace %q is annotated %s=%s", ns.Name, contract.AnnotationMode, v)}, ""
		}
		return modeChoice{}, fmt.Sprintf("namespace %q has the annotation %s=%q, which is not a mode: a cluster admin must set it to %q or %q, or remove it (the webhook's --mode=%s then decides)",
			ns.Name, contract.AnnotationMode, v, contract.ModeRedirect, contract.ModeEnv, cfg.Mode)
	}
	switch cfg.Mode {
	case contract.ModeRedirect, contract.ModeEnv:
		return modeChoice{cfg.Mode, "the webhook runs with --mode=" + cfg.Mode}, ""
	}
	if level, ok := ns.Labels[contract.LabelPodSecurityEnforce]; ok && level != podSecurityPrivileged {
		return modeChoice{contract.ModeEnv, fmt.Sprintf("namespace %q enforces the %q Pod Security level (%s), which refuses podrole-init", ns.Name, level, contract.LabelPodSecurityEnforce)}, ""
	}
	return modeChoice{contract.ModeRedirect, fmt.Sprintf("namespace %q does not enforce the baseline or restricted Pod Security level", ns.Name)}, ""
}

// inEnvMode is c for deciding a pod in env mode: no rules exist there, so
// what only protects them is not asked for: NET_RAW is neither dropped nor
// refused, NET_ADMIN is admitted. Privileged containers, SYS_ADMIN, ALL,
// host access and SYS_PTRACE with a shared process namespace stay refused:
// they reach the node (other pods' agents and tokens) or this pod's agent.
func (c Config) inEnvMode() Config {
	c.env = true
	return c
}

// allowNetAdmin: --allow-net-admin, or env mode (no rules to delete).
func (c Config) allowNetAdmin() bool { return c.AllowNetAdmin || c.env }

// envEscapeRisk is escapeRisk's counterpart in env mode.
const envEscapeRisk = "it could leave the pod for its node, where other pods' agents, credentials and tokens are"

// escapeRiskFor is why a network privilege is refused in cfg's mode.
func escapeRiskFor(cfg Config) string {
	if cfg.env {
		return envEscapeRisk
	}
	return escapeRisk
}

// podEnvMode reports whether podrole injected pod in env mode: it records
// podrole.io/mode=env and has no podrole-init. Init containers cannot change
// after creation, so a pod with podrole-init is judged in redirect mode
// whatever its annotations say (the NET_RAW checks are never skipped there).
func podEnvMode(pod *corev1.Pod) bool {
	if pod == nil || pod.Annotations[contract.AnnotationMode] != contract.ModeEnv {
		return false
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == contract.InitContainerName {
			return false
		}
	}
	return true
}

// checkPodMode refuses a pod that names a mode other than its namespace's:
// the mode is the cluster admin's choice (namespace annotation, Pod Security
// label, --mode), never the pod's.
func checkPodMode(pod *corev1.Pod, m modeChoice) string {
	v, ok := pod.Annotations[contract.AnnotationMode]
	if !ok || v == m.mode {
		return ""
	}
	return fmt.Sprintf("pod %s has the annotation %s=%q, but podrole writes that annotation itself and pods cannot choose their mode: %s, so its mode is %q; remove the annotation (a cluster admin chooses the mode with the namespace annotation %s: %s|%s)",
		podName(pod), contract.AnnotationMode, v, m.why, m.mode, contract.AnnotationMode, contract.ModeRedirect, contract.ModeEnv)
}

// podRequiresIMDSv2 reads the pod's podrole.io/require-imdsv2 annotation:
// "true" or "false" (absent: false); anything else is a denial naming it.
func podRequiresIMDSv2(pod *corev1.Pod) (bool, string) {
	v, ok := pod.Annotations[contract.AnnotationRequireIMDSv2]
	if !ok {
		return false, ""
	}
	switch v {
	case "true":
		return true, ""
	case "false":
		return false, ""
	}
	return false, fmt.Sprintf("pod %s has the annotation %s=%q: use \"true\" (its agent refuses IMDSv1 requests) or \"false\"", podName(pod), contract.AnnotationRequireIMDSv2, v)
}

// metadataEndpoint is the value of AWS_EC2_METADATA_SERVICE_ENDPOINT for an
// agent on port: with the trailing slash, which the AWS CLI v2 needs.
func metadataEndpoint(port int) string {
	return "http://127.0.0.1:" + strconv.Itoa(port) + "/"
}

// envVars are what every app container and app init container gets in env mode.
func envVars(port int) []corev1.EnvVar {
	return []corev1.EnvVar{{Name: contract.EnvMetadataEndpoint, Value: metadataEndpoint(port)}, {Name: contract.EnvMetadataEndpointMode, Value: "IPv4"}}
}

// envPatch adds envVars(port) to every init and regular container of pod
// but podrole's, at their current indexes (so these operations must come
// before any that insert containers, like netRawPatch's). A container that
// already defines one of the variables in its env keeps its own value: its
// author asked for it explicitly, and in env mode nothing enforces the
// endpoint anyway (an app can call 169.254.169.254 itself); the other
// variable is still added, and a warning names the container. envFrom is not
// looked at: a variable in env wins over one from envFrom.
func envPatch(pod *corev1.Pod, port int) (patch, []string) {
	var p patch
	var warnings []string
	want := envVars(port)
	for _, l := range []struct {
		kind, path string
		cs         []corev1.Container
	}{{"init container", "/spec/initContainers/", pod.Spec.InitContainers}, {"container", "/spec/containers/", pod.Spec.Containers}} {
		for i := range l.cs {
			c := &l.cs[i]
			if isPodroleContainer(c.Name) {
				continue
			}
			var add []corev1.EnvVar
			var own []string
			for _, w := range want {
				e := lastEnv(c.Env, w.Name)
				switch {
				case e == nil:
					add = append(add, w)
				case e.ValueFrom != nil || e.Value != w.Value:
					own = append(own, w.Name)
				}
			}
			if len(own) > 0 {
				warnings = append(warnings, fmt.Sprintf("podrole: %s %q of pod %s sets %s itself; podrole keeps its value (in env mode it sets %s=%s only where a container sets nothing), so that container's AWS SDK may not ask podrole-agent for the pod's role",
					l.kind, c.Name, podName(pod), strings.Join(own, " and "), contract.EnvMetadataEndpoint, metadataEndpoint(port)))
			}
			if len(add) == 0 {
				continue
			}
			prefix := l.path + itoa(i)
			if len(c.Env) == 0 {
				p.add(prefix+"/env", add)
				continue
			}
			for _, v := range add {
				p.add(prefix+"/env/-", v)
			}
		}
	}
	return p, warnings
}

// lastEnv is the definition of name that wins in env (the last one).
func lastEnv(env []corev1.EnvVar, name string) *corev1.EnvVar {
	for i := len(env) - 1; i >= 0; i-- {
		if env[i].Name == name {
			return &env[i]
		}
	}
	return nil
}

// missingEnv names the first non-podrole init or regular container that
// defines neither value of one of the env-mode variables, and the variable.
func missingEnv(pod *corev1.Pod) (kind, name, variable string) {
	for _, l := range []struct {
		kind string
		cs   []corev1.Container
	}{{"init container", pod.Spec.InitContainers}, {"container", pod.Spec.Containers}} {
		for _, c := range l.cs {
			if isPodroleContainer(c.Name) {
				continue
			}
			for _, v := range []string{contract.EnvMetadataEndpoint, contract.EnvMetadataEndpointMode} {
				if lastEnv(c.Env, v) == nil {
					return l.kind, c.Name, v
				}
			}
		}
	}
	return "", "", ""
}

// envNotSet is the validating webhook's denial for a container the mutating
// webhook should have given the env-mode variables.
func envNotSet(kind, name, variable string, pod *corev1.Pod) string {
	return fmt.Sprintf("%s %q of pod %s does not set %s: in env mode podrole's mutating webhook gives every container the variables that point AWS SDKs at podrole-agent; it is missing, so that webhook was bypassed or a later one added the container after podrole's last call: make that webhook sort before podrole (or leave the pod alone), or set %s=%s and %s=IPv4 in the container",
		kind, name, podName(pod), variable, contract.EnvMetadataEndpoint, "http://127.0.0.1:<podrole-agent's port>/", contract.EnvMetadataEndpointMode)
}

// envWarning is what every env-mode injection tells the client: what env
// mode cannot do, and the node setting that closes it.
func envWarning(pod *corev1.Pod, m modeChoice, cfg Config) string {
	w := fmt.Sprintf("podrole: pod %s runs in env mode (%s): its containers find podrole-agent through %s, but nothing in the pod stops a process that calls 169.254.169.254 itself, and podrole cannot see whether the node answers pods; %s",
		podName(pod), m.why, contract.EnvMetadataEndpoint, envRemedy)
	if cfg.Source == contract.SourceNode {
		w += fmt.Sprintf(". This webhook runs with --source=node and --allow-env-mode-node-source: %s", envNodeSourceRisk)
	}
	return w
}

// noRoleEnvWarning is the warning for a pod that asks for no role in env
// mode, where podrole injects nothing.
func noRoleEnvWarning(pod *corev1.Pod, m modeChoice) string {
	return fmt.Sprintf("podrole: pod %s asks for no role and runs in env mode (%s), where podrole cannot block metadata traffic without privileges, so it injects nothing: its processes reach the node's instance metadata service if the node answers pods; %s",
		podName(pod), m.why, envRemedy)
}
