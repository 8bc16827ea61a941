// Package mutate turns a pod, its namespace and the webhook's configuration
// into an admission decision: for the mutating webhook (Mutate,
// CheckEphemeral) a JSONPatch that adds podrole's init step and agent and
// takes NET_RAW from every other container, or a denial; for the validating
// webhook (ValidateCreate, ValidateUpdate, ValidateEphemeral, CheckConnect)
// allow or deny. It is pure (no HTTP, no client-go): the server looks the
// namespace up and hands it in.
package mutate

import (
	"fmt"
	"net/url"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/webhook/policy"
	corev1 "k8s.io/api/core/v1"
)

// Config is the webhook's injection configuration, fixed at start.
type Config struct {
	SidecarImage string `json:"sidecarImage,omitempty"`
	// ImagePullPolicy of the injected containers; empty leaves the cluster default.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// BaseRoleARN completes role names; with or without its trailing '/'.
	BaseRoleARN          string `json:"baseRoleARN,omitempty"`
	Source               string `json:"source,omitempty"`
	STSEndpoint          string `json:"stsEndpoint,omitempty"`
	Region               string `json:"region,omitempty"`
	NodeMetadataEndpoint string `json:"nodeMetadataEndpoint,omitempty"`
	RequireAllowedRoles  bool   `json:"requireAllowedRoles,omitempty"`
	// DefaultRole is given to pods in a labelled namespace that ask for none.
	DefaultRole string `json:"defaultRole,omitempty"`
	SidecarMode string `json:"sidecarMode,omitempty"`
	// SidecarUID is the agent's UID (and GID) when it needs no capability
	// (web-identity). It grants nothing: podrole-init exempts a socket mark,
	// never a UID. With --source=node the agent runs as root instead (see
	// agentSecurityContext).
	SidecarUID int `json:"sidecarUID,omitempty"`
	// SidecarPort and HealthPort are the preferred ports; a pod that declares
	// one of them gets the next free one.
	SidecarPort int `json:"sidecarPort,omitempty"`
	HealthPort  int `json:"healthPort,omitempty"`
	// AllowNetAdmin admits pods whose containers add NET_ADMIN (service mesh
	// init containers such as istio-init need it). Such a container can
	// delete podrole's rules, so this weakens the guarantee; privileged
	// containers, SYS_ADMIN and ALL stay refused.
	AllowNetAdmin bool `json:"allowNetAdmin,omitempty"`
	// AllowNetRaw admits containers that add NET_RAW (and lets them keep it:
	// their NET_RAW is not dropped). A raw packet socket bypasses netfilter,
	// so such a container can reach the node's metadata service past
	// podrole's rules: this weakens the guarantee.
	AllowNetRaw bool `json:"allowNetRaw,omitempty"`
	// AllowHostAccess admits hostPID, hostIPC and hostPath volumes on the
	// node's runtime and kubelet state in labelled namespaces. They expose
	// other pods' tokens and agents' memory: this weakens the guarantee.
	AllowHostAccess bool `json:"allowHostAccess,omitempty"`
	// Mode is how pods reach their agent (--mode): contract.ModeRedirect (podrole-init's
	// rules in the pod's network namespace; needs NET_ADMIN and root, which
	// the baseline and restricted Pod Security Standards refuse), contract.ModeEnv (no
	// privileged step: apps are pointed at the agent with
	// AWS_EC2_METADATA_SERVICE_ENDPOINT) or contract.ModeAuto (env where the
	// namespace enforces baseline or restricted, redirect elsewhere). A
	// namespace annotation podrole.io/mode overrides it (see chooseMode).
	Mode string `json:"mode,omitempty"`
	// RequireIMDSv2 makes every agent refuse IMDSv1 requests (serve
	// --require-imdsv2); a pod can ask for it alone with the annotation
	// podrole.io/require-imdsv2: "true".
	RequireIMDSv2 bool `json:"requireIMDSv2,omitempty"`
	// AllowEnvModeNodeSource admits env mode with --source=node. The agent
	// then reads the node's metadata service unmarked (env mode installs no
	// rules and gives it no mark), so the node must answer pods, which is
	// exactly what lets every process of the pod reach the node role.
	AllowEnvModeNodeSource bool `json:"allowEnvModeNodeSource,omitempty"`
	// SessionTags makes every agent send session tags with sts:AssumeRole
	// (serve --session-tags): EKS Pod Identity's keys, the cluster's from
	// ClusterName and ClusterARN, the pod's from the downward API. Roles'
	// trust policies must then allow sts:TagSession. Not with web identity:
	// AssumeRoleWithWebIdentity takes tags only from the token.
	SessionTags bool `json:"sessionTags,omitempty"`
	// SessionTagsTransitive marks every tag transitive (TransitiveTagKeys).
	SessionTagsTransitive bool   `json:"sessionTagsTransitive,omitempty"`
	ClusterName           string `json:"clusterName,omitempty"`
	ClusterARN            string `json:"clusterARN,omitempty"`
	// env is set (by inEnvMode) while deciding a pod in env mode; it is not
	// configuration. Being a field, it is part of patch cache keys.
	env bool
	// Caches, when set, reuse patches and parsed allow-lists across pods
	// (see Caches); it changes no decision. Not configuration: never compared
	// or serialized.
	Caches *Caches `json:"-"`
}

// DefaultConfig returns the defaults of the webhook's injection flags. The
// sidecar image has none: a floating tag would inject whatever was pushed
// last, and an agent of another version than the webhook that checks it.
func DefaultConfig() Config {
	return Config{
		Source:               contract.SourceNode,
		NodeMetadataEndpoint: contract.DefaultNodeMetadataEndpoint,
		SidecarMode:          contract.SidecarModeNative,
		SidecarUID:           contract.DefaultSidecarUID,
		SidecarPort:          contract.DefaultSidecarPort,
		HealthPort:           contract.DefaultHealthPort,
		Mode:                 contract.ModeAuto,
	}
}

// Validate checks c and normalizes BaseRoleARN; errors name the flag and the fix.
func (c *Config) Validate() error {
	if c.SidecarImage == "" {
		return fmt.Errorf("--sidecar-image is required: give the podrole-sidecar image, e.g. ghcr.io/podrole/podrole-sidecar:v1")
	}
	base, err := policy.NormalizeBaseARN(c.BaseRoleARN)
	if err != nil {
		return fmt.Errorf("--base-role-arn: %w", err)
	}
	c.BaseRoleARN = base
	if c.Source != contract.SourceNode && c.Source != contract.SourceWebIdentity {
		return fmt.Errorf("--source=%q is not valid: use %q or %q", c.Source, contract.SourceNode, contract.SourceWebIdentity)
	}
	if c.SidecarMode != contract.SidecarModeNative && c.SidecarMode != contract.SidecarModeLegacy {
		return fmt.Errorf("--sidecar-mode=%q is not valid: use %q (Kubernetes 1.29+) or %q", c.SidecarMode, contract.SidecarModeNative, contract.SidecarModeLegacy)
	}
	if c.SidecarUID < 1 || c.SidecarUID > 2147483647 {
		return fmt.Errorf("--sidecar-uid=%d is not valid: give a non-root UID (1-2147483647), e.g. %d", c.SidecarUID, contract.DefaultSidecarUID)
	}
	for name, p := range map[string]int{"sidecar-port": c.SidecarPort, "health-port": c.HealthPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("--%s=%d is out of range: use 1-65535", name, p)
		}
	}
	if c.SidecarPort == c.HealthPort {
		return fmt.Errorf("--sidecar-port and --health-port are both %d: give them different ports", c.SidecarPort)
	}
	for name, v := range map[string]string{"sts-endpoint": c.STSEndpoint, "node-metadata-endpoint": c.NodeMetadataEndpoint} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--%s=%q is not an http(s) URL: give e.g. https://sts.us-east-1.amazonaws.com", name, v)
		}
	}
	if c.DefaultRole != "" {
		if _, d := policy.ResolveRole(c.DefaultRole, c.BaseRoleARN); d != nil {
			return fmt.Errorf("--default-role: %s", d.Message)
		}
	}
	switch c.Mode {
	case contract.ModeAuto, contract.ModeRedirect, contract.ModeEnv:
	default:
		return fmt.Errorf("--mode=%q is not valid: use %q (env where the namespace enforces the baseline or restricted Pod Security Standard, redirect elsewhere), %q or %q", c.Mode, contract.ModeAuto, contract.ModeRedirect, contract.ModeEnv)
	}
	if c.Mode == contract.ModeEnv && c.Source == contract.SourceNode && !c.AllowEnvModeNodeSource {
		return fmt.Errorf("--mode=%s with --source=%s: %s; use --source=%s, or start the webhook with --allow-env-mode-node-source to accept that",
			contract.ModeEnv, contract.SourceNode, envNodeSourceRisk, contract.SourceWebIdentity)
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--sidecar-image-pull-policy=%q is not valid: use Always, IfNotPresent or Never", c.ImagePullPolicy)
	}
	return c.validateSessionTags()
}

// validateSessionTags checks --session-tags and the flags that only mean
// something with it. The cluster's values are checked here, at start,
// against STS's limits on tag values: a bad one would otherwise stop every
// agent at its start.
func (c *Config) validateSessionTags() error {
	if !c.SessionTags {
		for name, set := range map[string]bool{"session-tags-transitive": c.SessionTagsTransitive, "cluster-name": c.ClusterName != "", "cluster-arn": c.ClusterARN != ""} {
			if set {
				return fmt.Errorf("--%s without --session-tags does nothing: add --session-tags, or drop --%s", name, name)
			}
		}
		return nil
	}
	if c.Source == contract.SourceWebIdentity {
		return fmt.Errorf("--session-tags with --source=%s: sts:AssumeRoleWithWebIdentity takes session tags only from the token's https://aws.amazon.com/tags claim, "+
			"which Kubernetes service-account tokens do not carry, so agents could not send them; use --source=%s (AssumeRole, whose trust policies then allow sts:TagSession) or drop --session-tags",
			contract.SourceWebIdentity, contract.SourceNode)
	}
	if err := contract.CheckClusterName(c.ClusterName); err != nil {
		return err
	}
	if c.ClusterARN != "" {
		if err := contract.CheckClusterARN(c.ClusterARN, c.ClusterName); err != nil {
			return err
		}
	}
	return nil
}
