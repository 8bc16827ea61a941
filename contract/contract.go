// Package contract holds every name the webhook and the sidecar must agree on:
// labels, annotations, container names, default ports and UIDs, and the
// sidecar's command line. The webhook builds the sidecar's arguments with
// ServeArgs / InitArgs; the sidecar parses them with the same types, so the
// injector and the agent cannot drift apart. docs/design.md is the source of truth
// for every name here; change both together or not at all.
package contract

// Namespace and pod labels.
const (
	// LabelInject on a namespace opts it in ("enabled"); on a pod, "disabled" opts the pod out.
	LabelInject   = "podrole.io/inject"
	InjectEnabled = "enabled"
	// InjectDisabled is the pod-level opt-out value of LabelInject.
	InjectDisabled = "disabled"
)

// Pod annotations read by the webhook (kube2iam-compatible names).
const (
	AnnotationRole        = "iam.amazonaws.com/role"
	AnnotationExternalID  = "iam.amazonaws.com/external-id"
	AnnotationSessionName = "iam.amazonaws.com/session-name"
)

// Namespace annotations holding allow-lists.
const (
	// AnnotationAllowedRoles is kube2iam's format: a JSON array of role names or ARNs, glob '*'.
	AnnotationAllowedRoles = "iam.amazonaws.com/allowed-roles"
	// AnnotationPermitted is kiam's format: one regular expression, anchored at both ends.
	AnnotationPermitted = "iam.amazonaws.com/permitted"
)

// Pod annotations written by the webhook.
const (
	AnnotationStatus = "podrole.io/status"
	StatusInjected   = "injected"
	// StatusBlocked is the AnnotationStatus value of pods that got only the
	// block step: they asked for no role, so metadata traffic is rejected.
	StatusBlocked     = "blocked"
	AnnotationRoleARN = "podrole.io/role-arn"
)

// Env mode: how pods in namespaces that enforce the baseline or restricted
// Pod Security Standard get their role (docs/design.md): only the agent is
// injected, and every app container gets EnvMetadataEndpoint and
// EnvMetadataEndpointMode. The agent knows nothing of modes; users, the
// webhook and the tests see these names.
const (
	// AnnotationMode on a namespace chooses the mode of its pods (ModeRedirect
	// or ModeEnv), overriding the webhook's --mode; on a pod it records the
	// mode podrole used. Pods cannot choose: a pod that asks for another mode
	// is refused.
	AnnotationMode = "podrole.io/mode"
	// ModeAuto, ModeRedirect and ModeEnv are the values of the webhook's
	// --mode; AnnotationMode takes ModeRedirect or ModeEnv.
	ModeAuto     = "auto"
	ModeRedirect = "redirect"
	ModeEnv      = "env"
	// AnnotationRequireIMDSv2 "true" on a pod makes its agent refuse IMDSv1.
	AnnotationRequireIMDSv2 = "podrole.io/require-imdsv2"
	// LabelPodSecurityEnforce is Pod Security admission's namespace label;
	// with --mode=auto, baseline or restricted there means env mode.
	LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"
	// EnvMetadataEndpoint and EnvMetadataEndpointMode are what every AWS SDK
	// and the AWS CLI read to find the instance metadata service.
	EnvMetadataEndpoint     = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
	EnvMetadataEndpointMode = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
)

// Injected container names.
const (
	InitContainerName  = "podrole-init"
	AgentContainerName = "podrole-agent"
)

// Entrypoint is the sidecar image's binary (Dockerfile.sidecar's ENTRYPOINT);
// its first argument picks init, serve or wait.
const Entrypoint = "/podrole-sidecar"

// Defaults shared by both binaries. Documented in the README.
const (
	// DefaultSidecarPort is where the agent serves IMDS on 127.0.0.1 inside the pod.
	DefaultSidecarPort = 9181
	// DefaultHealthPort serves /healthz, /readyz, /started and /metrics on all pod addresses,
	// so the kubelet's HTTP probes (sent from the node) reach it.
	DefaultHealthPort = 9182
	// DefaultSidecarUID is the agent's UID when it needs no capability
	// (--source=web-identity). It grants nothing: the redirect exempts a
	// socket mark, not a UID. Chosen to collide with no common image user.
	DefaultSidecarUID = 47181
	// DefaultAgentMark is the socket mark of the agent's connections to the
	// node's metadata service with --source=node ("PODR" in ASCII), exempted
	// by podrole-init. Only a process with CAP_NET_RAW or CAP_NET_ADMIN can
	// set a mark, and podrole takes both from every other container.
	DefaultAgentMark uint32 = 0x504f4452
	// DefaultNodeMetadataEndpoint is the node's real IMDS.
	DefaultNodeMetadataEndpoint = "http://169.254.169.254"
	// MetadataIPv4 and MetadataIPv6 are the addresses SDKs call.
	MetadataIPv4 = "169.254.169.254"
	MetadataIPv6 = "fd00:ec2::254"
	// DefaultTokenFile is where the webhook mounts the projected token (web-identity source).
	DefaultTokenFile = "/var/run/secrets/podrole/token"
	// TokenAudience is the audience of the projected service-account token.
	TokenAudience = "sts.amazonaws.com"
)

// Credential sources.
const (
	SourceNode        = "node"
	SourceWebIdentity = "web-identity"
)

// Sidecar modes of the webhook.
const (
	SidecarModeNative = "native"
	SidecarModeLegacy = "legacy"
)

// Health paths of the agent's health listener.
const (
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathStarted = "/started"
	PathMetrics = "/metrics"
)
