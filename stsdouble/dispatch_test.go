package stsdouble

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// post sends a raw form to the double and returns status and body.
func post(t *testing.T, url string, form string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, url, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestWireFormat(t *testing.T) {
	f := newFixture(t, nil)
	uuid := `[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`
	errRE := func(typ, code string) *regexp.Regexp {
		return regexp.MustCompile(`^<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>` + typ + `</Type><Code>` + code + `</Code><Message>[^<]+</Message></Error><RequestId>` + uuid + `</RequestId></ErrorResponse>$`)
	}
	tests := []struct {
		name   string
		form   string
		hdr    map[string]string
		status int
		re     *regexp.Regexp
	}{
		{"unsigned AssumeRole", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + appRole + "&RoleSessionName=x1", nil, 403, errRE("Sender", "MissingAuthenticationToken")},
		{"unsigned GetCallerIdentity", "Action=GetCallerIdentity&Version=2011-06-15", nil, 403, errRE("Sender", "MissingAuthenticationToken")},
		{"unknown action", "Action=GetSessionTokenX&Version=2011-06-15", nil, 400, errRE("Sender", "InvalidAction")},
		{"wrong version", "Action=GetCallerIdentity&Version=2010-01-01", nil, 400, errRE("Sender", "InvalidAction")},
		{"no action", "Version=2011-06-15", nil, 400, errRE("Sender", "MissingAction")},
		{"bad algorithm", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS3 foo"}, 400, errRE("Sender", "IncompleteSignature")},
		{"no signature field", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261128/us-east-1/sts/aws4_request, SignedHeaders=host", "X-Amz-Date": "20261128T000000Z"}, 400, errRE("Sender", "IncompleteSignature")},
		{"wrong service scope", "Action=GetCallerIdentity&Version=2011-06-15", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/" + time.Now().UTC().Format("20060102") + "/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=00", "X-Amz-Date": time.Now().UTC().Format(amzDateFmt)}, 403, errRE("Sender", "SignatureDoesNotMatch")},
		{"web identity without token", "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + appRole + "&RoleSessionName=x1", nil, 400, errRE("Sender", "ValidationError")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := post(t, f.srv.URL+"/", tt.form, tt.hdr)
			if status != tt.status || !tt.re.MatchString(body) {
				t.Errorf("got %d %s", status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "text/xml" {
				t.Errorf("Content-Type %q", ct)
			}
			if hdr.Get("X-Amzn-Requestid") == "" {
				t.Errorf("no x-amzn-RequestId header")
			}
		})
	}

	t.Run("success documents", func(t *testing.T) {
		// Capture the raw AssumeRole answer through the SDK's HTTP client.
		var raw bytes.Buffer
		c := sts.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(ciKey, ciSecret, ""), RetryMaxAttempts: 1,
			HTTPClient: recordingClient{&raw}}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
		if _, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("wire")}); err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIA[A-Z2-7]{16}</AccessKeyId><SecretAccessKey>[A-Za-z0-9+/=]{40}</SecretAccessKey><SessionToken>[A-Za-z0-9+/=]+</SessionToken><Expiration>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROA[A-Z2-7]{17}:wire</AssumedRoleId><Arn>arn:aws:sts::111122223333:assumed-role/app/wire</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>` + uuid + `</RequestId></ResponseMetadata></AssumeRoleResponse>$`)
		if !re.MatchString(raw.String()) {
			t.Errorf("AssumeRole body:\n%s", raw.String())
		}
		raw.Reset()
		if _, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{}); err != nil {
			t.Fatal(err)
		}
		re = regexp.MustCompile(`^<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/ci</Arn><UserId>AIDA[A-Z2-7]{17}</UserId><Account>111122223333</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>` + uuid + `</RequestId></ResponseMetadata></GetCallerIdentityResponse>$`)
		if !re.MatchString(raw.String()) {
			t.Errorf("GetCallerIdentity body:\n%s", raw.String())
		}
	})

	t.Run("presigned GET", func(t *testing.T) {
		// aws-iam-authenticator style: a presigned GetCallerIdentity URL fetched with GET.
		pc := sts.NewPresignClient(f.client("us-east-1", ciKey, ciSecret, ""))
		pr, err := pc.PresignGetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx(t), pr.Method, pr.URL, nil)
		for k, v := range pr.SignedHeader {
			if !strings.EqualFold(k, "host") {
				req.Header[k] = v
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "<Arn>arn:aws:iam::111122223333:user/ci</Arn>") {
			t.Fatalf("presigned call: %d %s", resp.StatusCode, b)
		}
		// Tampering with the signed query breaks the signature.
		req, _ = http.NewRequestWithContext(ctx(t), pr.Method, strings.Replace(pr.URL, "Version=2011-06-15", "Version=2011-06-15&Extra=1", 1), nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("tampered presigned URL: status %d, want 403", resp.StatusCode)
		}
	})
}

type recordingClient struct{ buf *bytes.Buffer }

func (c recordingClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.buf.Write(b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, err
}
