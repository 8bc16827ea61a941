package stsdouble

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func TestOutageLatencyAndAdmin(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client("us-east-1", ciKey, ciSecret, "")
	adminPost := func(path string) int {
		resp, err := http.Post(f.srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if st := adminPost("/_double/outage?on=1"); st != 200 {
		t.Fatalf("outage on: %d", st)
	}
	_, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if code, status := apiErr(t, err); code != "ServiceUnavailable" || status != 503 {
		t.Errorf("outage 503: got %s %d", code, status)
	}
	adminPost("/_double/outage?on=1&mode=close")
	_, err = c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	var re *awshttp.ResponseError
	if err == nil || (errors.As(err, &re) && re.HTTPStatusCode() != 0) {
		t.Errorf("outage close: want a transport error without an HTTP answer, got %v", err)
	}
	adminPost("/_double/outage?on=0")
	if _, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatalf("after outage: %v", err)
	}

	// Latency: a caller with a deadline shorter than the injected delay gives up.
	adminPost("/_double/latency?ms=2000")
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.GetCallerIdentity(short, &sts.GetCallerIdentityInput{})
	cancel()
	if err == nil {
		t.Errorf("latency 2s: a 200ms deadline call succeeded")
	}
	adminPost("/_double/latency?ms=0")

	for _, bad := range []string{"/_double/latency?ms=x", "/_double/outage?on=maybe", "/_double/outage?on=1&mode=tea", "/_double/lifetime?seconds=-1"} {
		if st := adminPost(bad); st != 400 {
			t.Errorf("%s: status %d, want 400", bad, st)
		}
	}

	// Lifetime cap and Expire, for rotation tests.
	adminPost("/_double/lifetime?seconds=120")
	out, err := c.AssumeRole(ctx(t), &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("short")})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d > 121*time.Second || d < 100*time.Second {
		t.Errorf("capped lifetime %s, want ~2m", d)
	}
	if st := adminPost("/_double/expire?access_key_id=" + *out.Credentials.AccessKeyId); st != 200 {
		t.Fatalf("expire: %d", st)
	}
	_, err = f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken).GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
	if code, _ := apiErr(t, err); code != "ExpiredToken" {
		t.Errorf("after expire: %s", code)
	}
	if st := adminPost("/_double/expire?access_key_id=ASIANOPE"); st != 404 {
		t.Errorf("expire unknown: %d", st)
	}

	if resp, err := http.Get(f.srv.URL + "/_double/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v", err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Get(f.srv.URL + "/_double/calls")
	if err != nil {
		t.Fatal(err)
	}
	var stats Stats
	json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if stats.Roles[appRole].AssumeRole != 1 || stats.Errors["ServiceUnavailable"] != 1 || stats.Errors["ExpiredToken"] != 1 {
		t.Errorf("calls = %+v", stats)
	}
	resp, err = http.Get(f.srv.URL + "/_double/issued?role=" + appRole)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var issued []Issued
	if err := json.Unmarshal(b, &issued); err != nil || len(issued) != 1 || issued[0].AccessKeyID != *out.Credentials.AccessKeyId {
		t.Errorf("issued = %s (%v)", b, err)
	}
	if strings.Contains(string(b), *out.Credentials.SecretAccessKey) || strings.Contains(string(b), *out.Credentials.SessionToken) {
		t.Errorf("/_double/issued leaks secrets")
	}
	adminPost("/_double/reset")
	if s := f.d.Stats(); s.Requests != 0 || len(s.Roles) != 0 {
		t.Errorf("after reset: %+v", s)
	}
	for _, secret := range []string{ciSecret, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken} {
		if strings.Contains(f.logs(), secret) {
			t.Errorf("a secret leaked into the logs")
		}
	}
}
