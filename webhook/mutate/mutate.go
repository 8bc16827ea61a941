package mutate

import (
	"fmt"
	"strings"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/policy"
	corev1 "k8s.io/api/core/v1"
)

// Outcome is what the webhook did with a pod; it is also the metrics label.
type Outcome string

const (
	// Injected: init step and agent added for a role.
	Injected Outcome = "injected"
	// Blocked: only the init step in block mode (the pod asked for no role).
	Blocked Outcome = "blocked"
	// Skipped: allowed unchanged (not selected, opted out, already injected, hostNetwork without role).
	Skipped Outcome = "skipped"
	// Denied: refused with a message.
	Denied Outcome = "denied"
	// Patched: allowed with a patch that only takes NET_RAW from containers
	// added after podrole's injection: new ephemeral containers (kubectl
	// debug), or containers a later mutating webhook added.
	Patched Outcome = "patched"
)

// Namespace is what the webhook knows about the pod's namespace.
type Namespace struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Result is the admission decision for one pod.
type Result struct {
	Outcome Outcome
	// Patch is a JSONPatch (RFC 6902) for Injected, Blocked and Patched, else nil.
	Patch []byte
	// Message is the denial shown to the user, or why the pod was skipped.
	Message string
	// Warnings are returned to the client (kubectl prints them).
	Warnings []string
	// RoleARN is the resolved role of an injected pod.
	RoleARN string
	// env: the pod was injected in env mode.
	env bool
}

// Mutate decides what to do with pod, created in ns, under cfg. cfg must
// have passed Validate. pod is not modified.
func Mutate(pod *corev1.Pod, ns Namespace, cfg Config) Result {
	// The webhook configuration's selectors already filter these; checking
	// again means a misconfigured selector cannot make us touch other pods.
	if ns.Labels[contract.LabelInject] != contract.InjectEnabled {
		return Result{Outcome: Skipped, Message: fmt.Sprintf("namespace %q is not labelled %s=%s", ns.Name, contract.LabelInject, contract.InjectEnabled)}
	}
	if ns.Name == "kube-system" {
		return Result{Outcome: Skipped, Message: "kube-system is never injected"}
	}
	if pod.Labels[contract.LabelInject] == contract.InjectDisabled {
		return Result{Outcome: Skipped, Message: fmt.Sprintf("pod is labelled %s=%s", contract.LabelInject, contract.InjectDisabled)}
	}
	if _, ok := pod.Annotations[contract.AnnotationStatus]; ok {
		return verifyInjected(pod, ns, cfg)
	}

	m, d := chooseMode(ns, cfg)
	if d != "" {
		return denied("%s", d)
	}
	if d := checkPodMode(pod, m); d != "" {
		return denied("%s", d)
	}
	if _, d := podRequiresIMDSv2(pod); d != "" {
		return denied("%s", d)
	}

	role := strings.TrimSpace(pod.Annotations[contract.AnnotationRole])
	asked := role != ""
	if !asked {
		role = cfg.DefaultRole
	}

	if m.mode == contract.ModeEnv {
		if role == "" {
			// Nothing unprivileged can block metadata traffic, so a pod
			// without a role gets nothing, and is told so. A token for STS
			// of its own would still pass the allow-lists by.
			if d := checkTokenMounts(pod, cfg); d != "" {
				return denied("%s", d)
			}
			return Result{Outcome: Skipped, Message: "no role in env mode: nothing to inject", Warnings: []string{noRoleEnvWarning(pod, m)}}
		}
		if pod.Spec.HostNetwork {
			return denied("pod %s uses hostNetwork: true, so its agent would serve the pod's role on the node's own loopback address, to every process of the node; remove hostNetwork or the %s annotation",
				podName(pod), contract.AnnotationRole)
		}
		if cfg.Source == contract.SourceNode && !cfg.AllowEnvModeNodeSource {
			return denied("pod %s runs in env mode (%s), but the webhook runs with --source=node: %s; a cluster admin can start the webhook with --source=%s (recommended), or with --allow-env-mode-node-source to accept that, or choose redirect mode for the namespace (annotation %s=%s, which needs the namespace's Pod Security level to admit podrole-init)",
				podName(pod), m.why, envNodeSourceRisk, contract.SourceWebIdentity, contract.AnnotationMode, contract.ModeRedirect)
		}
		cfg = cfg.inEnvMode()
	}

	if pod.Spec.HostNetwork {
		if asked {
			return denied("pod %s uses hostNetwork: true, so podrole cannot confine its metadata traffic (the redirect would land on the node); remove hostNetwork or the %s annotation",
				podName(pod), contract.AnnotationRole)
		}
		// A host-network pod that asked for nothing shares the node's network:
		// neither a block nor a default role can apply to it. Refusing it would
		// break node agents whenever a namespace is labelled, so it is let
		// through unchanged with a warning (README: "hostNetwork pods").
		return Result{Outcome: Skipped, Message: "hostNetwork pod without a role",
			Warnings: []string{fmt.Sprintf("podrole: pod %s uses hostNetwork, so podrole cannot block its metadata traffic; it can reach the node's instance metadata service", podName(pod))}}
	}
	if d := checkNetworkPrivileges(pod, cfg); d != "" {
		return denied("%s", d)
	}
	if d := checkHostAccess(pod, cfg); d != "" {
		return denied("%s", d)
	}
	if d := checkTokenMounts(pod, cfg); d != "" {
		return denied("%s", d)
	}
	if d := checkContainers(pod, cfg); d != "" {
		return denied("%s", d)
	}
	// Without the status annotation these names are not ours: injecting would
	// fail validation with a duplicate name, so say what to change instead.
	// Two loops, not one over a joined copy: a Container is large to copy.
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if n := cs[i].Name; n == contract.InitContainerName || n == contract.AgentContainerName {
				return denied("pod %s has a container named %q, which podrole reserves for its injected containers; rename it", podName(pod), n)
			}
		}
	}

	if role == "" {
		return block(pod, cfg)
	}
	res := inject(pod, ns, role, cfg)
	if cfg.env && res.Outcome == Injected {
		res.Warnings = append([]string{envWarning(pod, m, cfg)}, res.Warnings...)
	}
	return res
}

func denied(format string, args ...any) Result {
	return Result{Outcome: Denied, Message: "podrole: " + fmt.Sprintf(format, args...)}
}

func podName(pod *corev1.Pod) string {
	switch {
	case pod.Name != "":
		return fmt.Sprintf("%q", pod.Name)
	case pod.GenerateName != "":
		return fmt.Sprintf("%q", pod.GenerateName+"*")
	}
	return "(unnamed)"
}

// block gives a pod that asked for no role the init step in block mode.
// Block mode rejects metadata traffic from every process: no mark is exempt.
func block(pod *corev1.Pod, cfg Config) Result {
	port, _, err := choosePorts(pod, cfg)
	if err != nil {
		return denied("%v", err)
	}
	drops := netRawPatch(pod, cfg)
	key := newPatchKey(cfg, pod)
	key.block, key.port = true, port
	if b, ok := cfg.Caches.patch(key); ok {
		return Result{Outcome: Blocked, Patch: drops.prepend(b)}
	}
	init := initContainer(cfg, contract.InitConfig{Port: port, IPv6: contract.IPv6Auto, Block: true})
	var p patch
	p.prependInit(pod, init)
	p.annotate(pod, map[string]string{contract.AnnotationStatus: contract.StatusBlocked, contract.AnnotationMode: contract.ModeRedirect})
	b := p.bytes()
	cfg.Caches.storePatch(key, b)
	return Result{Outcome: Blocked, Patch: drops.prepend(b)}
}

// inject resolves and checks role, then adds the init step and the agent.
func inject(pod *corev1.Pod, ns Namespace, role string, cfg Config) Result {
	arn, d := cfg.Caches.resolveRole(role, cfg.BaseRoleARN)
	if d != nil {
		return Result{Outcome: Denied, Message: d.Message}
	}
	if d := cfg.Caches.listCache().CheckNamespace(policy.Namespace{Name: ns.Name, Annotations: ns.Annotations}, role, arn, cfg.BaseRoleARN, cfg.RequireAllowedRoles); d != nil {
		return Result{Outcome: Denied, Message: d.Message}
	}
	serve := contract.DefaultServeConfig()
	serve.RoleARN = arn
	serve.Source = cfg.Source
	serve.STSEndpoint = cfg.STSEndpoint
	serve.Region = cfg.Region
	serve.NodeMetadataEndpoint = cfg.NodeMetadataEndpoint
	// Session tags: the cluster's values here, the pod's in agentEnv.
	serve.SessionTags, serve.TransitiveSessionTags = cfg.SessionTags, cfg.SessionTagsTransitive
	serve.ClusterName, serve.ClusterARN = cfg.ClusterName, cfg.ClusterARN
	// The webhook's --require-imdsv2 is a floor: a pod can ask for IMDSv2
	// alone, never for IMDSv1 back. The annotation was checked in Mutate.
	imdsv2, _ := podRequiresIMDSv2(pod)
	serve.RequireIMDSv2 = cfg.RequireIMDSv2 || imdsv2
	if v, ok := pod.Annotations[contract.AnnotationExternalID]; ok {
		if d := policy.CheckExternalID(v); d != nil {
			return Result{Outcome: Denied, Message: d.Message}
		}
		serve.ExternalID = v
	}
	if v, ok := pod.Annotations[contract.AnnotationSessionName]; ok {
		if d := policy.CheckSessionName(v); d != nil {
			return Result{Outcome: Denied, Message: d.Message}
		}
		serve.SessionName = v
	}

	port, health, err := choosePorts(pod, cfg)
	if err != nil {
		return denied("%v", err)
	}
	// NET_RAW leaves every other container (see netraw.go); in env mode
	// instead they get the variables that point them at the agent. These
	// operations address the pod's containers by their current indexes, so
	// they go before the cached part, which inserts podrole's containers.
	drops := netRawPatch(pod, cfg)
	var warnings []string
	if cfg.env {
		drops, warnings = envPatch(pod, port)
	}
	var vol corev1.Volume
	if cfg.Source == contract.SourceWebIdentity {
		vol = tokenVolume(pod)
	}
	// The patch is a function of these (the rest of serve is cfg's), so a
	// pod like one seen before reuses its patch.
	key := newPatchKey(cfg, pod)
	key.arn, key.externalID, key.sessionName, key.port, key.health, key.volume = arn, serve.ExternalID, serve.SessionName, port, health, vol.Name
	key.requireIMDSv2 = serve.RequireIMDSv2
	if b, ok := cfg.Caches.patch(key); ok {
		return Result{Outcome: Injected, Patch: drops.prepend(b), RoleARN: arn, Warnings: warnings, env: cfg.env}
	}
	serve.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	serve.HealthListen = fmt.Sprintf(":%d", health)

	var p patch
	// With --source=node the agent reaches the node's metadata service with
	// its sockets marked, and podrole-init exempts exactly that mark; with
	// web identity it needs no way out, so nothing is exempt. Env mode has
	// no podrole-init at all.
	var inits []corev1.Container
	if !cfg.env {
		ic := contract.InitConfig{Port: port, IPv6: contract.IPv6Auto}
		if cfg.Source == contract.SourceNode {
			ic.AgentMark = contract.DefaultAgentMark
		}
		inits = append(inits, initContainer(cfg, ic))
	}
	agent := agentContainer(cfg, serve, health)
	if cfg.Source == contract.SourceWebIdentity {
		agent.VolumeMounts = []corev1.VolumeMount{{Name: vol.Name, MountPath: tokenDir(), ReadOnly: true}}
		p.appendVolume(pod, vol)
	}
	if cfg.SidecarMode == contract.SidecarModeLegacy {
		holdApp(&agent, health)
		if len(inits) > 0 {
			p.prependInit(pod, inits...)
		}
		p.prependContainer(pod, agent)
	} else {
		always := corev1.ContainerRestartPolicyAlways
		agent.RestartPolicy = &always
		p.prependInit(pod, append(inits, agent)...)
	}
	mode := contract.ModeRedirect
	if cfg.env {
		mode = contract.ModeEnv
	}
	p.annotate(pod, map[string]string{contract.AnnotationStatus: contract.StatusInjected, contract.AnnotationRoleARN: arn, contract.AnnotationMode: mode})
	b := p.bytes()
	cfg.Caches.storePatch(key, b)
	return Result{Outcome: Injected, Patch: drops.prepend(b), RoleARN: arn, Warnings: warnings, env: cfg.env}
}

// choosePorts returns the agent's IMDS and health ports: the configured ones,
// each moved up to the next port no container of the pod declares (wrapping
// from 65535 to 1024). A pod declaring every candidate gets an error: the
// search is bounded, one pass over the range, whatever the pod holds.
func choosePorts(pod *corev1.Pod, cfg Config) (port, health int, err error) {
	used := map[int]bool{}
	mark := func(cs []corev1.Container) {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[int(p.ContainerPort)] = true
			}
		}
	}
	mark(pod.Spec.InitContainers)
	mark(pod.Spec.Containers)
	for _, c := range pod.Spec.EphemeralContainers {
		for _, p := range c.Ports {
			used[int(p.ContainerPort)] = true
		}
	}
	free := func(what string, p int) (int, error) {
		for range maxPort {
			if !used[p] {
				used[p] = true
				return p, nil
			}
			if p++; p > maxPort {
				p = minSearchPort
			}
		}
		return 0, fmt.Errorf("pod %s declares every container port podrole could give its agent's %s port (%d-%d): podrole needs two ports no container declares; declare fewer ports", podName(pod), what, minSearchPort, maxPort)
	}
	if port, err = free("IMDS", cfg.SidecarPort); err != nil {
		return 0, 0, err
	}
	if health, err = free("health", cfg.HealthPort); err != nil {
		return 0, 0, err
	}
	return port, health, nil
}

// The port search wraps from maxPort to minSearchPort, above the privileged
// ports an app might bind without declaring.
const (
	minSearchPort = 1024
	maxPort       = 65535
)
