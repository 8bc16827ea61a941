package mutate

import (
	"fmt"
	"path"
	"strconv"
	"time"

	"github.com/podrole/podrole/contract"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TokenVolumeName is the projected service-account token volume (web-identity source).
const TokenVolumeName = "podrole-token"

// tokenExpirationSeconds is the projected token's lifetime; the kubelet
// refreshes it at 80%, and STS accepts it for AssumeRoleWithWebIdentity.
const tokenExpirationSeconds = 3600

// startupFailureThreshold × 1s is how long the agent may take to fetch the
// first credentials before the kubelet restarts it.
const startupFailureThreshold = 60

func ptr[T any](v T) *T { return &v }

// initContainer is podrole-init: root with NET_ADMIN and NET_RAW only, to
// install (or, with Block, reject) the metadata redirect in the pod's netns.
// It reads no flag from the environment (--ignore-env): a Service named
// "podrole" gives every container PODROLE_PORT=tcp://..., and the pod's own
// env and envFrom must not configure it either.
func initContainer(cfg Config, ic contract.InitConfig) corev1.Container {
	ic.IgnoreEnv = true
	return corev1.Container{
		Name:            contract.InitContainerName,
		Image:           cfg.SidecarImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{contract.Entrypoint},
		Args:            ic.Args(),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// Environment variables of podrole-agent. The agent reads no flag from the
// environment (--ignore-env): these exist only for the kubelet to expand
// $(NAME) in its arguments. A variable defined in the container's env wins
// over the service links of the same name, so a Service cannot change them.
const (
	envPodName        = "PODROLE_POD_NAME"
	envPodNamespace   = "PODROLE_POD_NAMESPACE"
	envPodUID         = "PODROLE_POD_UID"
	envServiceAccount = "PODROLE_SERVICE_ACCOUNT"
	envTopologyRegion = "PODROLE_TOPOLOGY_REGION"
	envTopologyZone   = "PODROLE_TOPOLOGY_ZONE"
)

// Node labels the PodTopologyLabelsAdmission plugin (beta, on by default
// since Kubernetes 1.35) copies onto a pod when it is bound to a node.
const (
	labelTopologyRegion = "topology.kubernetes.io/region"
	labelTopologyZone   = "topology.kubernetes.io/zone"
)

// expand is the kubelet's $(NAME) reference to one of the container's env vars.
func expand(name string) string { return "$(" + name + ")" }

func fieldEnv(name, fieldPath string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath}}}
}

// agentEnv fills serve's pod-dependent arguments with $(NAME) references and
// returns the env vars they refer to, from the downward API: the pod's name
// may not exist yet at admission (generateName), and its node, which decides
// region and zone, is not known before scheduling.
//
// With --source=web-identity the agent gets nothing from the node's metadata
// service (no mark exempts it, and hop limit 1 is recommended), so region and
// zone must come from elsewhere: the region from --region when the webhook
// has one, else, like the zone, from the topology labels the API server
// copies from the node onto the pod at binding. A pod's author can set those
// labels too (the plugin overwrites them at binding when it is on), but only
// misleads its own agent: the region picks the STS endpoint that receives
// the pod's own token, which its author can mount anyway, and label values
// cannot hold a URL. Missing labels expand to "": the agent's defaults.
func agentEnv(cfg Config, serve *contract.ServeConfig) []corev1.EnvVar {
	env := []corev1.EnvVar{fieldEnv(envPodName, "metadata.name"), fieldEnv(envPodNamespace, "metadata.namespace")}
	serve.PodName, serve.PodNamespace = expand(envPodName), expand(envPodNamespace)
	if cfg.SessionTags {
		// The kubernetes-pod-uid and kubernetes-service-account tags. The
		// UID does not exist at admission; the service account is read from
		// the stored pod, after the ServiceAccount plugin defaulted it.
		env = append(env, fieldEnv(envPodUID, "metadata.uid"), fieldEnv(envServiceAccount, "spec.serviceAccountName"))
		serve.PodUID, serve.ServiceAccount = expand(envPodUID), expand(envServiceAccount)
	}
	if cfg.Source != contract.SourceWebIdentity {
		return env
	}
	if serve.Region == "" {
		env = append(env, fieldEnv(envTopologyRegion, "metadata.labels['"+labelTopologyRegion+"']"))
		serve.Region = expand(envTopologyRegion)
	}
	env = append(env, fieldEnv(envTopologyZone, "metadata.labels['"+labelTopologyZone+"']"))
	serve.AvailabilityZone = expand(envTopologyZone)
	return env
}

// agentSecurityContext is the agent's: read-only, no privilege escalation,
// RuntimeDefault seccomp, every capability dropped, and with --source=node
// exactly one added back: NET_RAW, to put contract.DefaultAgentMark on its
// sockets (SO_MARK needs CAP_NET_RAW since Linux 5.17, or CAP_NET_ADMIN),
// which is what podrole-init exempts. That needs root: Kubernetes gives a
// non-root process no capability (it sets no ambient capabilities, and a
// non-root exec clears the effective set), so the agent runs as UID 0.
// Being root grants nothing else here: UIDs exempt nothing, every other
// container of the pod loses NET_RAW, and exec, attach, debug targeting and
// edits of this container are refused.
//
// With --source=web-identity nothing is exempt: the agent needs no
// capability and runs as --sidecar-uid, non-root. So it does in env mode,
// whatever the source (there are no rules and no mark there): that is what
// the restricted Pod Security Standard admits.
func agentSecurityContext(cfg Config) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		Privileged:               ptr(false),
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if cfg.Source == contract.SourceWebIdentity || cfg.env {
		uid := int64(cfg.SidecarUID)
		sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = &uid, ptr(uid), ptr(true)
		return sc
	}
	sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = ptr(int64(0)), ptr(int64(0)), ptr(false)
	sc.Capabilities.Add = []corev1.Capability{"NET_RAW"}
	return sc
}

// agentContainer is podrole-agent serving the pod's role as IMDS on
// 127.0.0.1 and its health endpoints on every pod address (kubelet probes
// come from the node). serve must hold the role, ports and cfg's settings;
// the pod-dependent arguments are added here.
func agentContainer(cfg Config, serve contract.ServeConfig, health int) corev1.Container {
	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: p, Port: intstr.FromInt32(int32(health))}}, //nolint:gosec // G115: a port, validated to 1..65535,
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			FailureThreshold: failures,
		}
	}
	serve.IgnoreEnv = true
	if cfg.Source == contract.SourceNode && !cfg.env {
		serve.AgentMark = contract.DefaultAgentMark
	}
	env := agentEnv(cfg, &serve)
	return corev1.Container{
		Name:            contract.AgentContainerName,
		Image:           cfg.SidecarImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{contract.Entrypoint},
		Args:            serve.Args(),
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: "podrole-health", ContainerPort: int32(health), Protocol: corev1.ProtocolTCP}}, //nolint:gosec // G115: a port, validated to 1..65535
		// Started means the first credentials are cached; the kubelet starts the
		// next container only after this passes. There is deliberately no
		// readiness probe: a native sidecar's readiness gates the pod's, so an STS
		// blip would take every pod of a Service out of its endpoints at once,
		// and each pod's Ready would wait up to a probe period after start. The
		// agent's /readyz and its metrics are there for people and alerts.
		StartupProbe:  probe(contract.PathStarted, 1, startupFailureThreshold),
		LivenessProbe: probe(contract.PathHealthz, 10, 3),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: agentSecurityContext(cfg),
	}
}

// holdApp makes a legacy (regular container) agent hold the app's start: the
// kubelet starts containers in order and runs each postStart hook before it
// starts the next one, so waiting here for /started delays the app until the
// first credentials are cached. Limits: the app's own init containers run
// before any regular container, so they get no credentials; a Job's pod never
// completes because the agent does not exit. Use native mode where possible.
func holdApp(agent *corev1.Container, health int) {
	wait := contract.DefaultWaitConfig()
	wait.URL = fmt.Sprintf("http://127.0.0.1:%d%s", health, contract.PathStarted)
	wait.Timeout = startupFailureThreshold * time.Second
	wait.IgnoreEnv = true
	agent.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: append([]string{contract.Entrypoint}, wait.Args()...),
	}}}
}

func tokenDir() string { return path.Dir(contract.DefaultTokenFile) }

// tokenVolume is the projected service-account token for web identity,
// named so it does not clash with the pod's own volumes.
func tokenVolume(pod *corev1.Pod) corev1.Volume {
	taken := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		taken[v.Name] = true
	}
	name := TokenVolumeName
	for i := 1; taken[name]; i++ {
		name = TokenVolumeName + "-" + strconv.Itoa(i)
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience:          contract.TokenAudience,
			ExpirationSeconds: ptr(int64(tokenExpirationSeconds)),
			Path:              path.Base(contract.DefaultTokenFile),
		}}},
	}}}
}
