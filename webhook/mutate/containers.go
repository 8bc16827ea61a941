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

// Entrypoint is the sidecar image's binary; its first argument picks init or serve.
const Entrypoint = "/podrole-sidecar"

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
func initContainer(cfg Config, ic contract.InitConfig) corev1.Container {
	return corev1.Container{
		Name:            contract.InitContainerName,
		Image:           cfg.SidecarImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{Entrypoint},
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

// agentContainer is podrole-agent serving the pod's role as IMDS on
// 127.0.0.1 and its health endpoints on every pod address (kubelet probes
// come from the node).
func agentContainer(cfg Config, serve contract.ServeConfig, health int) corev1.Container {
	uid := int64(cfg.SidecarUID)
	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: p, Port: intstr.FromInt32(int32(health))}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            contract.AgentContainerName,
		Image:           cfg.SidecarImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{Entrypoint},
		Args:            serve.Args(),
		Env: []corev1.EnvVar{
			{Name: "PODROLE_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "PODROLE_POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "podrole-health", ContainerPort: int32(health), Protocol: corev1.ProtocolTCP}},
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
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             ptr(true),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
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
	agent.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: append([]string{Entrypoint}, wait.Args()...),
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
