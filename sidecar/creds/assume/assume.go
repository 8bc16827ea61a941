// Package assume fetches the pod role's credentials from AWS STS: with the
// node's credentials (sts:AssumeRole, kube2iam-compatible) or with a projected
// service-account token (sts:AssumeRoleWithWebIdentity). Both implement
// creds.Source; nothing else in the sidecar imports the AWS SDK.
package assume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/creds"
)

// API names, as used in metrics and logs.
const (
	APIAssumeRole                = "AssumeRole"
	APIAssumeRoleWithWebIdentity = "AssumeRoleWithWebIdentity"
)

// Config is what both sources need.
type Config struct {
	RoleARN     string
	SessionName string // must already be valid; see SessionName
	ExternalID  string // AssumeRole only; empty: not sent
	Duration    time.Duration
	Region      string // signing region and, without STSEndpoint, the regional endpoint
	STSEndpoint string // optional URL override
	// Tags are session tags sent with AssumeRole (the node source only:
	// AssumeRoleWithWebIdentity takes tags only from the token). STS then
	// needs sts:TagSession in the role's trust policy too.
	Tags []contract.SessionTag
	// TransitiveTags marks every tag transitive (TransitiveTagKeys).
	TransitiveTags bool
	// HTTPClient is used for STS (and, for the node source, the node's IMDS);
	// nil: the SDK's default. The agent passes NewHTTPClient's, whose
	// sockets carry its mark.
	HTTPClient HTTPClient
}

// HTTPClient sends one HTTP request (the SDK's aws.HTTPClient).
type HTTPClient interface {
	Do(*http.Request) (*http.Response, error)
}

// NewHTTPClient returns the one HTTP client of every call the agent makes
// (STS, and with --source=node the node's IMDS for base credentials and
// placement): the SDK's own client, with its timeouts and TLS settings, and
// with control (nil: none) run on every socket before it connects. The
// agent's control sets its socket mark, podrole-init's only exemption from
// the metadata redirect: a connection dialled any other way would reach
// the agent itself instead of the node. Only the SDK's client type gets the
// IMDS client's fail-fast dial and header timeouts, hence this type.
//
// The node's metadata endpoint (and the metadata addresses) are never
// proxied: the real IMDS refuses proxied token requests, and a proxy would
// see the node's credentials. Other hosts (STS) follow the proxy
// environment as the SDK does.
func NewHTTPClient(control func(network, address string, c syscall.RawConn) error, nodeMetadataEndpoint string) *awshttp.BuildableClient {
	direct := map[string]bool{contract.MetadataIPv4: true, contract.MetadataIPv6: true}
	if u, err := url.Parse(nodeMetadataEndpoint); err == nil && u.Hostname() != "" {
		direct[u.Hostname()] = true
	}
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Control = control }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.Proxy = func(r *http.Request) (*url.URL, error) {
				if direct[r.URL.Hostname()] {
					return nil, nil
				}
				return proxyFromEnvironment(r)
			}
		})
}

// proxyFromEnvironment is http.ProxyFromEnvironment; tests replace it (the
// real one reads the environment once per process).
var proxyFromEnvironment = http.ProxyFromEnvironment

func (c Config) check() error {
	if _, err := ParseRoleARN(c.RoleARN); err != nil {
		return err
	}
	if !sessionNameRE.MatchString(c.SessionName) {
		return fmt.Errorf("role session name %q is not valid: STS needs 2-64 characters from [A-Za-z0-9+=,.@_-]", c.SessionName)
	}
	if c.Region == "" {
		return errors.New("no region for STS: pass --region (or run where the node's metadata service tells it)")
	}
	return nil
}

// ParseRoleARN checks that s is an IAM role ARN.
func ParseRoleARN(s string) (arn.ARN, error) {
	a, err := arn.Parse(s)
	if err != nil || a.Service != "iam" || !strings.HasPrefix(a.Resource, "role/") || len(a.Resource) == len("role/") {
		return arn.ARN{}, fmt.Errorf("%q is not an IAM role ARN: use arn:aws:iam::123456789012:role/name", s)
	}
	return a, nil
}

// RoleName is the last path segment of a role ARN: what IMDS lists.
func RoleName(roleARN string) string {
	return roleARN[strings.LastIndex(roleARN, "/")+1:]
}

var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	sessionBadRE  = regexp.MustCompile(`[^\w+=,.@-]+`)
)

// SessionName returns the role session name: explicit when given (an error
// if STS would refuse it), else "<namespace>.<pod>" sanitized to STS's
// alphabet and length, else "podrole-<random>".
func SessionName(explicit, namespace, pod string) (string, error) {
	if explicit != "" {
		if !sessionNameRE.MatchString(explicit) {
			return "", fmt.Errorf("--session-name=%q is not valid: use 2-64 characters from [A-Za-z0-9+=,.@_-]", explicit)
		}
		return explicit, nil
	}
	var parts []string
	for _, p := range []string{namespace, pod} {
		if p = strings.Trim(sessionBadRE.ReplaceAllString(p, "-"), "-"); p != "" {
			parts = append(parts, p)
		}
	}
	name := strings.Join(parts, ".")
	if len(name) > 64 {
		name = name[:64]
	}
	if len(name) >= 2 {
		return name, nil
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "podrole-" + hex.EncodeToString(b[:]), nil
}

func (c Config) stsOptions(o *sts.Options) {
	o.Region = c.Region
	if c.STSEndpoint != "" {
		o.BaseEndpoint = aws.String(c.STSEndpoint)
	}
	if c.HTTPClient != nil {
		o.HTTPClient = c.HTTPClient
	}
}

// Node assumes the role with the base credentials of the SDK's default chain
// (on a node: the instance profile from the node's IMDS).
type Node struct {
	cfg    Config
	client *sts.Client
}

// NewNode builds the default chain with its IMDS client pointed at
// nodeMetadataEndpoint. It does not fetch anything yet.
func NewNode(ctx context.Context, cfg Config, nodeMetadataEndpoint string) (*Node, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.Region),
		config.WithEC2IMDSEndpoint(nodeMetadataEndpoint),
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS SDK default configuration for the node's base credentials: %w", err)
	}
	return &Node{cfg: cfg, client: sts.NewFromConfig(awsCfg, cfg.stsOptions)}, nil
}

// API implements creds.Source.
func (*Node) API() string { return APIAssumeRole }

// Fetch implements creds.Source.
func (n *Node) Fetch(ctx context.Context) (creds.Credentials, error) {
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(n.cfg.RoleARN),
		RoleSessionName: aws.String(n.cfg.SessionName),
		DurationSeconds: aws.Int32(int32(n.cfg.Duration / time.Second)), //nolint:gosec // G115: validated to at most 12 h
	}
	if n.cfg.ExternalID != "" {
		in.ExternalId = aws.String(n.cfg.ExternalID)
	}
	for _, t := range n.cfg.Tags {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
		if n.cfg.TransitiveTags {
			in.TransitiveTagKeys = append(in.TransitiveTagKeys, t.Key)
		}
	}
	out, err := n.client.AssumeRole(ctx, in)
	if err != nil {
		return creds.Credentials{}, n.assumeRoleError(err)
	}
	return convert(n.cfg.RoleARN, out.Credentials, out.AssumedRoleUser)
}

// assumeRoleError wraps an AssumeRole failure. A refusal of a call that
// carried session tags most often means the trust policy allows
// sts:AssumeRole but not sts:TagSession: the message says so, since STS's
// own names the missing action only sometimes.
func (n *Node) assumeRoleError(err error) error {
	var ae smithy.APIError
	if len(n.cfg.Tags) > 0 && errors.As(err, &ae) && ae.ErrorCode() == "AccessDenied" {
		return fmt.Errorf("sts:AssumeRole into %s with session tags: %w; the role's trust policy must allow sts:TagSession "+
			"(next to sts:AssumeRole) for the node role, because the agent sends session tags (--session-tags)", n.cfg.RoleARN, err)
	}
	return fmt.Errorf("sts:AssumeRole into %s: %w", n.cfg.RoleARN, err)
}

// WebIdentity assumes the role with the projected service-account token.
type WebIdentity struct {
	cfg       Config
	tokenFile string
	client    *sts.Client
}

// NewWebIdentity returns the source; the token is read on every Fetch
// because the kubelet rotates the file.
func NewWebIdentity(cfg Config, tokenFile string) (*WebIdentity, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if len(cfg.Tags) > 0 {
		return nil, errors.New("session tags cannot be sent with sts:AssumeRoleWithWebIdentity (it takes them only from the token's https://aws.amazon.com/tags claim): use the node source or no session tags")
	}
	// The call is unsigned: the token is the proof. Anonymous credentials
	// keep the SDK from looking for any others.
	client := sts.New(sts.Options{Credentials: aws.AnonymousCredentials{}}, cfg.stsOptions)
	return &WebIdentity{cfg: cfg, tokenFile: tokenFile, client: client}, nil
}

// API implements creds.Source.
func (*WebIdentity) API() string { return APIAssumeRoleWithWebIdentity }

// Fetch implements creds.Source.
func (w *WebIdentity) Fetch(ctx context.Context) (creds.Credentials, error) {
	raw, err := os.ReadFile(w.tokenFile)
	if err != nil {
		// The error names the file, never its content.
		return creds.Credentials{}, fmt.Errorf("read the service-account token: %w", err)
	}
	token := string(bytes.TrimSpace(raw))
	if token == "" {
		return creds.Credentials{}, fmt.Errorf("the service-account token file %s is empty", w.tokenFile)
	}
	out, err := w.client.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(w.cfg.RoleARN),
		RoleSessionName:  aws.String(w.cfg.SessionName),
		WebIdentityToken: aws.String(token),
		DurationSeconds:  aws.Int32(int32(w.cfg.Duration / time.Second)), //nolint:gosec // G115: validated to at most 12 h
	})
	if err != nil {
		return creds.Credentials{}, fmt.Errorf("sts:AssumeRoleWithWebIdentity into %s: %w", w.cfg.RoleARN, err)
	}
	return convert(w.cfg.RoleARN, out.Credentials, out.AssumedRoleUser)
}

func convert(roleARN string, c *types.Credentials, user *types.AssumedRoleUser) (creds.Credentials, error) {
	if c == nil {
		return creds.Credentials{}, fmt.Errorf("STS answered without credentials for %s", roleARN)
	}
	out := creds.Credentials{
		AccessKeyID:     aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken:    aws.ToString(c.SessionToken),
		Expiration:      aws.ToTime(c.Expiration),
	}
	// The assumed-role ARN names the account; fall back to the role's.
	if user != nil {
		if a, err := arn.Parse(aws.ToString(user.Arn)); err == nil {
			out.AccountID = a.AccountID
		}
	}
	if out.AccountID == "" {
		if a, err := arn.Parse(roleARN); err == nil {
			out.AccountID = a.AccountID
		}
	}
	return out, nil
}
