package contract

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// ServeConfig is the command line of `podrole-sidecar serve`. The webhook fills
// it at admission and calls Args; the sidecar registers it with RegisterFlags.
type ServeConfig struct {
	RoleARN              string
	Listen               string // host:port of the IMDS emulator
	HealthListen         string // host:port of /healthz, /readyz, /started, /metrics
	Source               string // SourceNode or SourceWebIdentity
	STSEndpoint          string // URL override; empty: the regional endpoint
	Region               string
	AvailabilityZone     string
	NodeMetadataEndpoint string
	TokenFile            string
	ExternalID           string
	SessionName          string
	SessionDuration      time.Duration
	RequireIMDSv2        bool
	// AgentMark is the socket mark (SO_MARK) the agent puts on its connections
	// to the node's metadata service; podrole-init exempts exactly this mark.
	// 0: no mark (web-identity, or a serve run outside a pod). Setting a mark
	// needs CAP_NET_RAW (Linux 5.17+) or CAP_NET_ADMIN, which no other
	// container of an injected pod has: that, not a UID, is the exemption.
	AgentMark uint32
	// IgnoreEnv: take no flag from PODROLE_* environment variables. The
	// webhook always sets it, so a pod's env, envFrom and service links
	// (a Service named "podrole" yields PODROLE_PORT=tcp://...) cannot
	// configure an injected container.
	IgnoreEnv bool
	// PodName and PodNamespace name the session when --session-name is empty.
	// The webhook feeds them through the downward API (PODROLE_POD_NAME,
	// PODROLE_POD_NAMESPACE), not as arguments: the name may not exist yet at admission.
	PodName      string
	PodNamespace string
	// SessionTags: send session tags with sts:AssumeRole (--source=node
	// only), the keys EKS Pod Identity uses (see SessionTagList), for
	// attribute-based access control. The role's trust policy must then
	// allow sts:TagSession.
	SessionTags bool
	// TransitiveSessionTags passes every tag as a TransitiveTagKeys member
	// too, so that it survives role chaining from the pod's session.
	TransitiveSessionTags bool
	// ClusterName and ClusterARN are the eks-cluster-name and
	// eks-cluster-arn tags (the ARN tag is left out when empty).
	ClusterName string
	ClusterARN  string
	// PodUID and ServiceAccount are the kubernetes-pod-uid and
	// kubernetes-service-account tags. Like PodName, the webhook feeds them
	// through the downward API (metadata.uid, spec.serviceAccountName): the
	// UID does not exist yet at admission.
	PodUID         string
	ServiceAccount string
	// SkipNodeIMDSCheck is --check-node-imds=false: the agent then does not
	// check at start whether an app in the pod (an unmarked socket) gets an
	// answer from the node's instance metadata service. Inverted so that the
	// zero value keeps the check on: a ServeConfig built field by field, as
	// the webhook may, cannot turn it off by leaving a field out.
	SkipNodeIMDSCheck bool
}

// DefaultServeConfig returns the defaults of every serve flag.
func DefaultServeConfig() ServeConfig {
	return ServeConfig{
		Listen:               net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultSidecarPort)),
		HealthListen:         ":" + strconv.Itoa(DefaultHealthPort),
		Source:               SourceNode,
		NodeMetadataEndpoint: DefaultNodeMetadataEndpoint,
		TokenFile:            DefaultTokenFile,
		SessionDuration:      time.Hour,
	}
}

// RegisterFlags binds c's fields to fs, with c's current values as defaults.
func (c *ServeConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RoleARN, "role-arn", c.RoleARN, "ARN of the role to serve (required)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "host:port of the IMDS emulator")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "host:port of /healthz, /readyz, /started and /metrics")
	fs.StringVar(&c.Source, "source", c.Source, "where base credentials come from: node or web-identity")
	fs.StringVar(&c.STSEndpoint, "sts-endpoint", c.STSEndpoint, "STS endpoint URL (default: the regional endpoint)")
	fs.StringVar(&c.Region, "region", c.Region, "AWS region, for STS and served as placement/region: with --source=node the node's IMDS wins when it answers "+
		"(retried in the background when it does not at start) and this flag is the fallback; with --source=web-identity only this flag (required)")
	fs.StringVar(&c.AvailabilityZone, "availability-zone", c.AvailabilityZone, "availability zone served as placement/availability-zone: with --source=node "+
		"the node's IMDS wins when it answers (retried in the background) and this flag is the fallback; with --source=web-identity only this flag")
	fs.StringVar(&c.NodeMetadataEndpoint, "node-metadata-endpoint", c.NodeMetadataEndpoint, "the node's IMDS: with --source=node, base credentials and the "+
		"region, zone and identity document (read at start, retried in the background until it answers); with --source=web-identity never asked for anything; "+
		"--check-node-imds probes it either way")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "projected service-account token (web-identity source)")
	fs.StringVar(&c.ExternalID, "external-id", c.ExternalID, "sts:ExternalId for AssumeRole")
	fs.StringVar(&c.SessionName, "session-name", c.SessionName, "role session name (default: derived from the pod)")
	fs.DurationVar(&c.SessionDuration, "session-duration", c.SessionDuration, "requested session length (15m..12h)")
	fs.BoolVar(&c.RequireIMDSv2, "require-imdsv2", c.RequireIMDSv2, "refuse metadata requests without an IMDSv2 token")
	agentMarkFlag(fs, &c.AgentMark, "mark put on connections to the node's metadata service; podrole-init --agent-mark exempts it (0: none)")
	ignoreEnvFlag(fs, &c.IgnoreEnv)
	fs.StringVar(&c.PodName, "pod-name", c.PodName, "the pod's name, for the default session name (the webhook passes the downward API's metadata.name)")
	fs.StringVar(&c.PodNamespace, "pod-namespace", c.PodNamespace, "the pod's namespace, for the default session name (the webhook passes the downward API's metadata.namespace)")
	fs.Var(invertedBool{&c.SkipNodeIMDSCheck}, "check-node-imds", "at start, check whether apps in this pod reach the node's IMDS "+
		"(an unmarked IMDSv2 token PUT and IMDSv1 GET to --node-metadata-endpoint): metric podrole_node_imds_reachable, and a warning naming the node setting that closes it (default true)")
	fs.BoolVar(&c.SessionTags, "session-tags", c.SessionTags, "send session tags with sts:AssumeRole (--source=node only): "+
		TagClusterARN+", "+TagClusterName+", "+TagNamespace+", "+TagServiceAccount+", "+TagPodName+", "+TagPodUID+" (as EKS Pod Identity); the role's trust policy must allow sts:TagSession")
	fs.BoolVar(&c.TransitiveSessionTags, "session-tags-transitive", c.TransitiveSessionTags, "also pass every session tag as transitive (TransitiveTagKeys), so it stays on sessions chained from the pod's")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "the "+TagClusterName+" session tag (required with --session-tags)")
	fs.StringVar(&c.ClusterARN, "cluster-arn", c.ClusterARN, "the "+TagClusterARN+" session tag: an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME); empty: no such tag")
	fs.StringVar(&c.PodUID, "pod-uid", c.PodUID, "the pod's UID, the "+TagPodUID+" session tag (the webhook passes the downward API's metadata.uid)")
	fs.StringVar(&c.ServiceAccount, "service-account", c.ServiceAccount, "the pod's service account, the "+TagServiceAccount+" session tag (the webhook passes the downward API's spec.serviceAccountName)")
}

// Args renders c as `serve` arguments, omitting values equal to the defaults.
// The order is fixed so that patches are stable.
func (c ServeConfig) Args() []string {
	d := DefaultServeConfig()
	args := []string{"serve"}
	add := func(name, v, def string) {
		if v != def {
			args = append(args, "--"+name+"="+v)
		}
	}
	add("role-arn", c.RoleARN, "")
	add("listen", c.Listen, d.Listen)
	add("health-listen", c.HealthListen, d.HealthListen)
	add("source", c.Source, d.Source)
	add("sts-endpoint", c.STSEndpoint, "")
	add("region", c.Region, "")
	add("availability-zone", c.AvailabilityZone, "")
	add("node-metadata-endpoint", c.NodeMetadataEndpoint, d.NodeMetadataEndpoint)
	add("token-file", c.TokenFile, d.TokenFile)
	add("external-id", c.ExternalID, "")
	add("session-name", c.SessionName, "")
	if c.SessionDuration != d.SessionDuration {
		args = append(args, "--session-duration="+c.SessionDuration.String())
	}
	if c.RequireIMDSv2 {
		args = append(args, "--require-imdsv2")
	}
	if c.AgentMark != 0 {
		args = append(args, "--agent-mark="+FormatMark(c.AgentMark))
	}
	if c.IgnoreEnv {
		args = append(args, "--ignore-env")
	}
	add("pod-name", c.PodName, "")
	add("pod-namespace", c.PodNamespace, "")
	if c.SkipNodeIMDSCheck {
		args = append(args, "--check-node-imds=false")
	}
	if c.SessionTags {
		args = append(args, "--session-tags")
	}
	if c.TransitiveSessionTags {
		args = append(args, "--session-tags-transitive")
	}
	add("cluster-name", c.ClusterName, "")
	add("cluster-arn", c.ClusterARN, "")
	add("pod-uid", c.PodUID, "")
	add("service-account", c.ServiceAccount, "")
	return args
}

// Validate reports the first problem with c, naming the flag and the fix.
func (c ServeConfig) Validate() error {
	if c.RoleARN == "" {
		return fmt.Errorf("--role-arn is required: pass the ARN of the role this pod gets (arn:aws:iam::123456789012:role/name)")
	}
	if c.Source != SourceNode && c.Source != SourceWebIdentity {
		return fmt.Errorf("--source=%q is not valid: use %q or %q", c.Source, SourceNode, SourceWebIdentity)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen=%q is not host:port: %w", c.Listen, err)
	}
	if c.HealthListen != "" {
		if _, _, err := net.SplitHostPort(c.HealthListen); err != nil {
			return fmt.Errorf("--health-listen=%q is not host:port: %w", c.HealthListen, err)
		}
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
	if c.SessionDuration < 15*time.Minute || c.SessionDuration > 12*time.Hour {
		return fmt.Errorf("--session-duration=%s is out of range: STS accepts 15m to 12h", c.SessionDuration)
	}
	if c.Source == SourceWebIdentity && c.TokenFile == "" {
		return fmt.Errorf("--token-file is required with --source=%s", SourceWebIdentity)
	}
	if c.Source == SourceWebIdentity && c.AgentMark != 0 {
		return fmt.Errorf("--agent-mark=%s with --source=%s: web identity needs nothing from the node's metadata service, so the agent gets no way out of the redirect; drop --agent-mark", FormatMark(c.AgentMark), SourceWebIdentity)
	}
	return c.checkSessionTags()
}

// IPv6 modes of `podrole-sidecar init --ipv6`.
const (
	IPv6Auto  = "auto"
	IPv6True  = "true"
	IPv6False = "false"
)

// InitConfig is the command line of `podrole-sidecar init`.
type InitConfig struct {
	Port int
	// AgentMark is the socket mark whose traffic is neither redirected nor
	// rejected (the agent's way to the node's metadata service with
	// --source=node); 0 exempts nothing.
	AgentMark uint32
	IPv6      string
	Block     bool
	DryRun    bool
	Cleanup   bool
	IgnoreEnv bool // see ServeConfig.IgnoreEnv
}

// DefaultInitConfig returns the defaults of every init flag.
func DefaultInitConfig() InitConfig {
	return InitConfig{Port: DefaultSidecarPort, IPv6: IPv6Auto}
}

// RegisterFlags binds c's fields to fs, with c's current values as defaults.
func (c *InitConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Port, "port", c.Port, "the agent's port on 127.0.0.1")
	agentMarkFlag(fs, &c.AgentMark, "socket mark whose metadata traffic is not redirected or rejected: the agent's (0: none)")
	removedFlag(fs, "exclude-uid", "the agent is no longer exempted by UID (any root process can take a UID); it marks its sockets and --agent-mark exempts the mark")
	fs.StringVar(&c.IPv6, "ipv6", c.IPv6, "also redirect [fd00:ec2::254]:80: auto, true or false")
	fs.BoolVar(&c.Block, "block", c.Block, "reject metadata traffic instead of redirecting it")
	fs.BoolVar(&c.DryRun, "dry-run", c.DryRun, "print the rules, change nothing")
	fs.BoolVar(&c.Cleanup, "cleanup", c.Cleanup, "remove the rules this command adds")
	ignoreEnvFlag(fs, &c.IgnoreEnv)
}

// Args renders c as `init` arguments, omitting values equal to the defaults.
func (c InitConfig) Args() []string {
	d := DefaultInitConfig()
	args := []string{"init"}
	if c.Block {
		args = append(args, "--block")
	}
	if c.Port != d.Port {
		args = append(args, "--port="+strconv.Itoa(c.Port))
	}
	if c.AgentMark != d.AgentMark {
		args = append(args, "--agent-mark="+FormatMark(c.AgentMark))
	}
	if c.IPv6 != d.IPv6 {
		args = append(args, "--ipv6="+c.IPv6)
	}
	if c.DryRun {
		args = append(args, "--dry-run")
	}
	if c.Cleanup {
		args = append(args, "--cleanup")
	}
	if c.IgnoreEnv {
		args = append(args, "--ignore-env")
	}
	return args
}

// Validate reports the first problem with c.
func (c InitConfig) Validate() error {
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("--port=%d is out of range: use 1-65535", c.Port)
	}
	if c.Block && c.AgentMark != 0 {
		return fmt.Errorf("--block with --agent-mark=%s: block mode rejects metadata traffic from every process; drop --agent-mark", FormatMark(c.AgentMark))
	}
	switch c.IPv6 {
	case IPv6Auto, IPv6True, IPv6False:
	default:
		return fmt.Errorf("--ipv6=%q is not valid: use auto, true or false", c.IPv6)
	}
	return nil
}

// FormatMark renders a socket mark the way iptables -S prints it (0x...).
func FormatMark(m uint32) string { return "0x" + strconv.FormatUint(uint64(m), 16) }

// markValue is a flag.Value for a 32-bit socket mark, decimal or 0x hex.
type markValue struct{ p *uint32 }

func (m markValue) String() string {
	if m.p == nil {
		return "0"
	}
	return FormatMark(*m.p)
}

func (m markValue) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return fmt.Errorf("not a 32-bit mark (decimal or 0x hex): %w", err)
	}
	*m.p = uint32(v)
	return nil
}

// invertedBool is a boolean flag stored negated: --check-node-imds sets
// SkipNodeIMDSCheck to its opposite, so the field's zero value is the
// flag's default (true).
type invertedBool struct{ p *bool }

func (b invertedBool) IsBoolFlag() bool { return true }

func (b invertedBool) String() string {
	if b.p == nil {
		return "true"
	}
	return strconv.FormatBool(!*b.p)
}

func (b invertedBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("not a boolean: %w", err)
	}
	*b.p = !v
	return nil
}

func agentMarkFlag(fs *flag.FlagSet, p *uint32, usage string) {
	fs.Var(markValue{p}, "agent-mark", usage)
}

// IgnoreEnvFlag is the flag that turns off PODROLE_* environment variables;
// envflag.Parse looks for it by this name.
const IgnoreEnvFlag = "ignore-env"

func ignoreEnvFlag(fs *flag.FlagSet, p *bool) {
	fs.BoolVar(p, IgnoreEnvFlag, *p, "read no flag from PODROLE_* environment variables (the webhook sets it: a pod's environment must not configure podrole's containers)")
}

// removedFlag keeps a flag name that no longer works so that using it says
// why and what replaced it, instead of "flag provided but not defined".
func removedFlag(fs *flag.FlagSet, name, why string) {
	fs.Func(name, "removed: "+why, func(string) error {
		return fmt.Errorf("--%s was removed: %s", name, why)
	})
}
