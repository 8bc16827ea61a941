package stsdouble

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/podrole/podrole/internal/testenv"
)

func TestAssumeRoleWithRealSDK(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client("us-east-1", ciKey, ciSecret, "")
	before := time.Now()
	out, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("build-42")})
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(*cr.AccessKeyId) || *cr.SecretAccessKey == "" || *cr.SessionToken == "" {
		t.Fatalf("credentials look wrong: key %q", *cr.AccessKeyId)
	}
	if got, want := *out.AssumedRoleUser.Arn, "arn:aws:sts::111122223333:assumed-role/app/build-42"; got != want {
		t.Errorf("Arn = %s, want %s", got, want)
	}
	if !regexp.MustCompile(`^AROA[A-Z2-7]{17}:build-42$`).MatchString(*out.AssumedRoleUser.AssumedRoleId) {
		t.Errorf("AssumedRoleId = %s", *out.AssumedRoleUser.AssumedRoleId)
	}
	if d := cr.Expiration.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("default session lasts %s, want 1h", d)
	}
	if out.PackedPolicySize != nil { //nolint:staticcheck // SA1019: real STS still sends it, and the double must too
		t.Errorf("PackedPolicySize present without a session policy")
	}
	issued := f.d.Issued(appRole)
	if len(issued) != 1 || issued[0].AccessKeyID != *cr.AccessKeyId || issued[0].Caller != "arn:aws:iam::111122223333:user/ci" {
		t.Fatalf("Issued = %+v", issued)
	}
	if c := f.d.Calls(appRole); c.AssumeRole != 1 || c.Denied != 0 {
		t.Errorf("Calls = %+v", c)
	}

	// The issued credentials sign GetCallerIdentity and come back as the assumed role.
	app := f.client("us-east-1", *cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken)
	id, err := app.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != *out.AssumedRoleUser.Arn || *id.Account != account || *id.UserId != *out.AssumedRoleUser.AssumedRoleId {
		t.Errorf("GetCallerIdentity = %s %s %s", *id.Arn, *id.Account, *id.UserId)
	}
	if c := f.d.Calls(appRole); c.GetCallerIdentity != 1 {
		t.Errorf("GetCallerIdentity not counted for the role: %+v", c)
	}

	// A session policy makes STS report PackedPolicySize.
	out, err = c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("p1"), Policy: aws.String(`{"Version":"2012-10-17","Statement":[]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if out.PackedPolicySize == nil || *out.PackedPolicySize < 1 { //nolint:staticcheck // SA1019: real STS still sends it, and the double must too
		t.Errorf("PackedPolicySize missing with a session policy")
	}
}

func TestGetCallerIdentityLongTermKeys(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, ak, sk, tok, arn string
	}{
		{"user", ciKey, ciSecret, "", "arn:aws:iam::111122223333:user/ci"},
		{"node role", nodeKey, nodeSec, nodeTok, "arn:aws:sts::111122223333:assumed-role/node-role/i-0123456789abcdef0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.client("eu-west-1", tt.ak, tt.sk, tt.tok).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
			if err != nil {
				t.Fatal(err)
			}
			if *id.Arn != tt.arn || *id.Account != account {
				t.Errorf("got %s %s, want %s", *id.Arn, *id.Account, tt.arn)
			}
		})
	}
}

func TestNodeRoleAssumesPodRole(t *testing.T) {
	f := newFixture(t, nil)
	node := f.client("us-east-1", nodeKey, nodeSec, nodeTok)
	out, err := node.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("default-web-1")})
	if err != nil {
		t.Fatal(err)
	}
	// Role chaining: an assumed-role caller may not ask for more than an hour.
	app := f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	long := "arn:aws:iam::111122223333:role/teams/long"
	_, err = app.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("chain"), DurationSeconds: aws.Int32(7200)})
	if code, status := apiErr(t, err); code != "ValidationError" || status != 400 || !strings.Contains(err.Error(), "role chaining") {
		t.Fatalf("chained 2h: %s %d %v", code, status, err)
	}
	out, err = app.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(long), RoleSessionName: aws.String("chain")})
	if err != nil {
		t.Fatal(err)
	}
	// The role's path is not part of the assumed-role ARN.
	if got := *out.AssumedRoleUser.Arn; got != "arn:aws:sts::111122223333:assumed-role/long/chain" {
		t.Errorf("Arn = %s", got)
	}
}

func TestAssumeRoleErrors(t *testing.T) {
	f := newFixture(t, nil)
	good := f.client("us-east-1", ciKey, ciSecret, "")
	issued, err := good.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("to-expire")})
	if err != nil {
		t.Fatal(err)
	}
	ic := issued.Credentials
	in := func(role, session string) *sts.AssumeRoleInput {
		return &sts.AssumeRoleInput{RoleArn: aws.String(role), RoleSessionName: aws.String(session)}
	}
	type refusal struct {
		name   string
		client *sts.Client
		input  *sts.AssumeRoleInput
		code   string
		status int
		msg    string
	}
	tests := []refusal{
		{"wrong secret", f.client("us-east-1", ciKey, "not-the-secret", ""), in(appRole, "s1"), "SignatureDoesNotMatch", 403, "does not match"},
		{"unknown key", f.client("us-east-1", "AKIAUNKNOWNEXAMPLE00", ciSecret, ""), in(appRole, "s1"), "InvalidClientTokenId", 403, "security token included in the request is invalid"},
		{"node key without its token", f.client("us-east-1", nodeKey, nodeSec, ""), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"node key with another token", f.client("us-east-1", nodeKey, nodeSec, "forged"), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"issued key with wrong token", f.client("us-east-1", *ic.AccessKeyId, *ic.SecretAccessKey, "forged"), in(appRole, "s1"), "InvalidClientTokenId", 403, ""},
		{"region outside config", f.client("ap-south-1", ciKey, ciSecret, ""), in(appRole, "s1"), "SignatureDoesNotMatch", 403, "valid region"},
		{"untrusted caller", good, in("arn:aws:iam::111122223333:role/other", "s1"), "AccessDenied", 403, "User: arn:aws:iam::111122223333:user/ci is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111122223333:role/other"},
		{"unknown role", good, in("arn:aws:iam::111122223333:role/nope", "s1"), "AccessDenied", 403, "not authorized"},
		{"other account", good, in("arn:aws:iam::444455556666:role/app", "s1"), "AccessDenied", 403, ""},
		{"malformed role arn", good, in("arn:aws:iam::1111:rolex/app", "s1"), "ValidationError", 400, "is invalid"},
		{"short role arn", good, in("arn:aws:iam::1:r", "s1"), "ValidationError", 400, "roleArn"},
		{"session name too short", good, in(appRole, "s"), "ValidationError", 400, "greater than or equal to 2"},
		{"session name too long", good, in(appRole, strings.Repeat("s", 65)), "ValidationError", 400, "less than or equal to 64"},
		{"session name bad chars", good, in(appRole, "bad name!"), "ValidationError", 400, `[\w+=,.@-]*`},
		{"duration below 900", good, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(600)}, "ValidationError", 400, "greater than or equal to 900"},
		{"duration above role max", good, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(7200)}, "ValidationError", 400, "MaxSessionDuration"},
		{"duration above 12h", good, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/teams/long"), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(43201)}, "ValidationError", 400, "less than or equal to 43200"},
	}
	partner := "arn:aws:iam::111122223333:role/partner"
	node := f.client("us-east-1", nodeKey, nodeSec, nodeTok)
	tests = append(tests,
		refusal{"external id missing", node, in(partner, "s1"), "AccessDenied", 403, "assumed-role/node-role/i-0123456789abcdef0 is not authorized"},
		refusal{"external id wrong", node, &sts.AssumeRoleInput{RoleArn: aws.String(partner), RoleSessionName: aws.String("s1"), ExternalId: aws.String("guess")}, "AccessDenied", 403, ""},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.AssumeRole(ctx(t), tt.input)
			if err == nil {
				t.Fatal("call succeeded")
			}
			code, status := apiErr(t, err)
			if code != tt.code || status != tt.status || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %s %d (%v), want %s %d containing %q", code, status, err, tt.code, tt.status, tt.msg)
			}
		})
	}

	t.Run("external id right", func(t *testing.T) {
		_, err := node.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(partner), RoleSessionName: aws.String("s1"), ExternalId: aws.String("podrole-ext-1")})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("expired issued credentials", func(t *testing.T) {
		f.clk.Advance(61 * time.Minute) // the SDK still signs with real time: the skew check must not trip first
		defer f.clk.Advance(-61 * time.Minute)
		_, err := f.client("us-east-1", *ic.AccessKeyId, *ic.SecretAccessKey, *ic.SessionToken).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, status := apiErr(t, err); code != "ExpiredToken" || status != 400 {
			t.Fatalf("got %s %d, want ExpiredToken 400", code, status)
		}
	})
	t.Run("signature from the past", func(t *testing.T) {
		f.clk.Advance(16 * time.Minute)
		defer f.clk.Advance(-16 * time.Minute)
		_, err := good.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, status := apiErr(t, err); code != "SignatureDoesNotMatch" || status != 403 || !strings.Contains(err.Error(), "Signature expired") {
			t.Fatalf("got %s %d %v", code, status, err)
		}
	})
	t.Run("signature from the future", func(t *testing.T) {
		f.clk.Advance(-16 * time.Minute)
		defer f.clk.Advance(16 * time.Minute)
		_, err := good.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if code, _ := apiErr(t, err); code != "SignatureDoesNotMatch" || !strings.Contains(err.Error(), "not yet current") {
			t.Fatalf("got %s %v", code, err)
		}
	})
	if got := f.d.Calls(appRole).Denied; got == 0 {
		t.Errorf("denied calls about the app role were not counted")
	}
	if got := f.d.Calls("arn:aws:iam::111122223333:role/nope"); got != (RoleCalls{}) {
		t.Errorf("unknown role got counters: %+v", got)
	}
}

// TestBotocoreParsesResponses: a second, independent STS client (the AWS CLI
// v2's botocore) accepts the double's signatures checks and parses its XML
// answers and errors.
func TestBotocoreParsesResponses(t *testing.T) {
	const aws = "/usr/bin/aws"
	_, err := os.Stat(aws)
	testenv.Need(t, err == nil, aws, "Debian's awscli (scripts/deps.sh)")
	f := newFixture(t, nil)
	run := func(secret string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx(t), aws, append(args, "--endpoint-url", f.srv.URL, "--output", "json")...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=" + ciKey, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1"}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(ciSecret, "sts", "get-caller-identity")
	if err != nil || !strings.Contains(out, `"Arn": "arn:aws:iam::111122223333:user/ci"`) {
		t.Fatalf("get-caller-identity: %v\n%s", err, out)
	}
	out, err = run(ciSecret, "sts", "assume-role", "--role-arn", appRole, "--role-session-name", "cli")
	if err != nil || !strings.Contains(out, `"Arn": "arn:aws:sts::111122223333:assumed-role/app/cli"`) || !strings.Contains(out, `"AccessKeyId": "ASIA`) {
		t.Fatalf("assume-role: %v\n%s", err, out)
	}
	out, err = run("wrong", "sts", "get-caller-identity")
	if err == nil || !strings.Contains(out, "(SignatureDoesNotMatch)") {
		t.Errorf("wrong secret: %v\n%s", err, out)
	}
	out, err = run(ciSecret, "sts", "assume-role", "--role-arn", "arn:aws:iam::111122223333:role/other", "--role-session-name", "cli")
	if err == nil || !strings.Contains(out, "(AccessDenied)") || !strings.Contains(out, "is not authorized to perform: sts:AssumeRole") {
		t.Errorf("untrusted: %v\n%s", err, out)
	}
}
