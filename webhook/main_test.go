package main

import (
	"io"
	"strings"
	"testing"

	"github.com/podrole/podrole/contract"
)

// TestFlags checks that every flag also comes from PODROLE_<NAME>, that the
// command line wins, and that bad values stop the webhook at start with an
// error naming the flag and the fix.
func TestFlags(t *testing.T) {
	ok := []string{"--cert-dir=/tls", "--sidecar-image=registry.example/s:1"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		err  string
		// check inspects a successful parse.
		check func(t *testing.T, o *options)
	}{
		{name: "defaults", args: ok, check: func(t *testing.T, o *options) {
			c := o.inject
			if c.Source != contract.SourceNode || c.SidecarMode != contract.SidecarModeNative || c.SidecarUID != contract.DefaultSidecarUID ||
				c.SidecarPort != contract.DefaultSidecarPort || c.HealthPort != contract.DefaultHealthPort || o.listen != ":9443" {
				t.Errorf("defaults %+v", o)
			}
		}},
		{name: "environment", args: []string{"--cert-dir=/tls"}, env: map[string]string{
			"PODROLE_SIDECAR_IMAGE": "registry.example/s:2", "PODROLE_BASE_ROLE_ARN": "arn:aws:iam::111122223333:role",
			"PODROLE_REQUIRE_ALLOWED_ROLES": "true", "PODROLE_SOURCE": "web-identity", "PODROLE_SIDECAR_PORT": "8181",
		}, check: func(t *testing.T, o *options) {
			c := o.inject
			if c.SidecarImage != "registry.example/s:2" || c.BaseRoleARN != "arn:aws:iam::111122223333:role/" || !c.RequireAllowedRoles ||
				c.Source != contract.SourceWebIdentity || c.SidecarPort != 8181 {
				t.Errorf("from env: %+v", c)
			}
		}},
		{name: "command line wins", args: append(ok, "--region=eu-west-1"), env: map[string]string{"PODROLE_REGION": "us-east-1"},
			check: func(t *testing.T, o *options) {
				if o.inject.Region != "eu-west-1" {
					t.Errorf("region %q", o.inject.Region)
				}
			}},
		{name: "self-signed", args: []string{"--self-signed", "--sidecar-image=x"}, check: func(t *testing.T, o *options) {
			if !o.selfSigned || o.selfSecret != "podrole-system/podrole-webhook-tls" {
				t.Errorf("%+v", o)
			}
		}},
		{name: "mode default auto", args: ok, check: func(t *testing.T, o *options) {
			if c := o.inject; c.Mode != contract.ModeAuto || c.RequireIMDSv2 || c.AllowEnvModeNodeSource {
				t.Errorf("mode defaults %+v", c)
			}
		}},
		{name: "mode env with web identity", args: append(ok, "--mode=env", "--source=web-identity", "--require-imdsv2"), check: func(t *testing.T, o *options) {
			if c := o.inject; c.Mode != contract.ModeEnv || !c.RequireIMDSv2 {
				t.Errorf("%+v", c)
			}
		}},
		{name: "mode from environment", args: ok, env: map[string]string{"PODROLE_MODE": "redirect", "PODROLE_REQUIRE_IMDSV2": "true"}, check: func(t *testing.T, o *options) {
			if c := o.inject; c.Mode != contract.ModeRedirect || !c.RequireIMDSv2 {
				t.Errorf("%+v", c)
			}
		}},
		{name: "bad --mode", args: append(ok, "--mode=sidecar"), err: `--mode="sidecar" is not valid`},
		{name: "mode env with node source", args: append(ok, "--mode=env"), err: "--mode=env with --source=node"},
		{name: "mode env with node source allowed", args: append(ok, "--mode=env", "--allow-env-mode-node-source"), check: func(t *testing.T, o *options) {
			if c := o.inject; c.Mode != contract.ModeEnv || !c.AllowEnvModeNodeSource || c.Source != contract.SourceNode {
				t.Errorf("%+v", c)
			}
		}},
		{name: "no certificate", args: []string{"--sidecar-image=x"}, err: "give --cert-dir"},
		{name: "no sidecar image", args: []string{"--cert-dir=/tls"}, err: "--sidecar-image is required"},
		{name: "both certificate modes", args: append(ok, "--self-signed"), err: "not both"},
		{name: "bad secret ref", args: []string{"--self-signed", "--sidecar-image=x", "--self-signed-secret=just-a-name"}, err: "is not NAMESPACE/NAME"},
		{name: "bad base ARN", args: append(ok, "--base-role-arn=arn:aws:iam::1:role/"), err: "--base-role-arn"},
		{name: "bad source", args: append(ok, "--source=instance"), err: `--source="instance" is not valid`},
		{name: "bad mode", args: append(ok, "--sidecar-mode=sidecar"), err: "--sidecar-mode"},
		{name: "root sidecar uid", args: append(ok, "--sidecar-uid=0"), err: "--sidecar-uid=0"},
		{name: "port clash", args: append(ok, "--sidecar-port=9000", "--health-port=9000"), err: "both 9000"},
		{name: "port range", args: append(ok, "--health-port=70000"), err: "--health-port=70000 is out of range"},
		{name: "bad sts endpoint", args: append(ok, "--sts-endpoint=sts.amazonaws.com"), err: "--sts-endpoint"},
		{name: "bad default role", args: append(ok, "--default-role=has space"), err: "--default-role"},
		{name: "default role name without base", args: append(ok, "--default-role=reader"), err: "no --base-role-arn"},
		{name: "bad pull policy", args: append(ok, "--sidecar-image-pull-policy=Sometimes"), err: "pull-policy"},
		{name: "bad log level", args: append(ok, "--log-level=loud"), err: "--log-level"},
		{name: "bad listen", args: append(ok, "--listen=9443"), err: "--listen"},
		{name: "bad env value", args: ok, env: map[string]string{"PODROLE_SIDECAR_UID": "many"}, err: "PODROLE_SIDECAR_UID"},
		{name: "stray argument", args: append(ok, "extra"), err: "unexpected arguments"},
		{name: "session tags off by default", args: ok, check: func(t *testing.T, o *options) {
			if c := o.inject; c.SessionTags || c.SessionTagsTransitive || c.ClusterName != "" || c.ClusterARN != "" {
				t.Errorf("%+v", c)
			}
		}},
		{name: "session tags", args: append(ok, "--session-tags", "--session-tags-transitive", "--cluster-name=prod",
			"--cluster-arn=arn:aws-cn:eks:cn-north-1:111122223333:cluster/prod"), check: func(t *testing.T, o *options) {
			if c := o.inject; !c.SessionTags || !c.SessionTagsTransitive || c.ClusterName != "prod" || c.ClusterARN != "arn:aws-cn:eks:cn-north-1:111122223333:cluster/prod" {
				t.Errorf("%+v", c)
			}
		}},
		{name: "session tags from environment", args: ok, env: map[string]string{"PODROLE_SESSION_TAGS": "true", "PODROLE_CLUSTER_NAME": "prod"},
			check: func(t *testing.T, o *options) {
				if c := o.inject; !c.SessionTags || c.ClusterName != "prod" || c.ClusterARN != "" || c.SessionTagsTransitive {
					t.Errorf("%+v", c)
				}
			}},
		{name: "session tags without cluster name", args: append(ok, "--session-tags"), err: "--cluster-name is required with --session-tags"},
		{name: "session tags with web identity", args: append(ok, "--session-tags", "--cluster-name=prod", "--source=web-identity"),
			err: "--session-tags with --source=web-identity"},
		{name: "cluster name not a tag value", args: append(ok, "--session-tags", "--cluster-name=prod,eu"), err: `--cluster-name="prod,eu" cannot be a session tag value`},
		{name: "cluster arn not an EKS ARN", args: append(ok, "--session-tags", "--cluster-name=prod", "--cluster-arn=arn:aws:iam::111122223333:role/prod"),
			err: "is not an EKS cluster ARN: give arn:aws:eks:REGION:ACCOUNT:cluster/NAME"},
		{name: "cluster arn of another cluster", args: append(ok, "--session-tags", "--cluster-name=prod", "--cluster-arn=arn:aws:eks:us-east-1:111122223333:cluster/dev"),
			err: `names cluster "dev" but --cluster-name is "prod"`},
		{name: "transitive without session tags", args: append(ok, "--session-tags-transitive"), err: "--session-tags-transitive without --session-tags does nothing"},
		{name: "cluster name without session tags", args: append(ok, "--cluster-name=prod"), err: "--cluster-name without --session-tags does nothing: add --session-tags"},
		{name: "cluster arn without session tags", args: append(ok, "--cluster-arn=arn:aws:eks:us-east-1:111122223333:cluster/prod"), err: "--cluster-arn without --session-tags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, io.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}
