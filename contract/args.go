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
	// PodName and PodNamespace name the session when --session-name is empty.
	// The webhook feeds them through the downward API (PODROLE_POD_NAME,
	// PODROLE_POD_NAMESPACE), not as arguments: the name may not exist yet at admission.
	PodName      string
	PodNamespace string
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
	fs.StringVar(&c.Region, "region", c.Region, "AWS region (default: from the node's IMDS)")
	fs.StringVar(&c.AvailabilityZone, "availability-zone", c.AvailabilityZone, "availability zone served when the node's IMDS does not answer")
	fs.StringVar(&c.NodeMetadataEndpoint, "node-metadata-endpoint", c.NodeMetadataEndpoint, "the node's IMDS, for base credentials and harmless metadata")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "projected service-account token (web-identity source)")
	fs.StringVar(&c.ExternalID, "external-id", c.ExternalID, "sts:ExternalId for AssumeRole")
	fs.StringVar(&c.SessionName, "session-name", c.SessionName, "role session name (default: derived from the pod)")
	fs.DurationVar(&c.SessionDuration, "session-duration", c.SessionDuration, "requested session length (15m..12h)")
	fs.BoolVar(&c.RequireIMDSv2, "require-imdsv2", c.RequireIMDSv2, "refuse metadata requests without an IMDSv2 token")
	fs.StringVar(&c.PodName, "pod-name", c.PodName, "the pod's name, for the default session name (normally from PODROLE_POD_NAME)")
	fs.StringVar(&c.PodNamespace, "pod-namespace", c.PodNamespace, "the pod's namespace, for the default session name (normally from PODROLE_POD_NAMESPACE)")
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
	add("pod-name", c.PodName, "")
	add("pod-namespace", c.PodNamespace, "")
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
	return nil
}

// IPv6 modes of `podrole-sidecar init --ipv6`.
const (
	IPv6Auto  = "auto"
	IPv6True  = "true"
	IPv6False = "false"
)

// InitConfig is the command line of `podrole-sidecar init`.
type InitConfig struct {
	Port       int
	ExcludeUID int
	IPv6       string
	Block      bool
	DryRun     bool
	Cleanup    bool
}

// DefaultInitConfig returns the defaults of every init flag.
func DefaultInitConfig() InitConfig {
	return InitConfig{Port: DefaultSidecarPort, ExcludeUID: DefaultSidecarUID, IPv6: IPv6Auto}
}

// RegisterFlags binds c's fields to fs, with c's current values as defaults.
func (c *InitConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Port, "port", c.Port, "the agent's port on 127.0.0.1")
	fs.IntVar(&c.ExcludeUID, "exclude-uid", c.ExcludeUID, "UID whose traffic is not redirected (the agent's)")
	fs.StringVar(&c.IPv6, "ipv6", c.IPv6, "also redirect [fd00:ec2::254]:80: auto, true or false")
	fs.BoolVar(&c.Block, "block", c.Block, "reject metadata traffic instead of redirecting it")
	fs.BoolVar(&c.DryRun, "dry-run", c.DryRun, "print the rules, change nothing")
	fs.BoolVar(&c.Cleanup, "cleanup", c.Cleanup, "remove the rules this command adds")
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
	if c.ExcludeUID != d.ExcludeUID {
		args = append(args, "--exclude-uid="+strconv.Itoa(c.ExcludeUID))
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
	return args
}

// Validate reports the first problem with c.
func (c InitConfig) Validate() error {
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("--port=%d is out of range: use 1-65535", c.Port)
	}
	if c.ExcludeUID < 0 {
		return fmt.Errorf("--exclude-uid=%d is negative: give the agent's UID", c.ExcludeUID)
	}
	switch c.IPv6 {
	case IPv6Auto, IPv6True, IPv6False:
	default:
		return fmt.Errorf("--ipv6=%q is not valid: use auto, true or false", c.IPv6)
	}
	return nil
}
