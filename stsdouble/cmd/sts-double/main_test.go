package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// The command serves STS and the admin API on one port, announces readiness
// on stdout, and logs calls without secrets.
func TestServeConfigFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outR, outW := io.Pipe()
	logs := &strings.Builder{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen=127.0.0.1:0", "--config=../../testdata/config.json"}, outW, logs)
		outW.Close()
	}()
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(outR)
		if s.Scan() {
			line <- s.Text()
		}
		io.Copy(io.Discard, outR)
	}()
	var url string
	select {
	case l := <-line:
		m := regexp.MustCompile(`^sts-double ready on (http://127\.0\.0\.1:\d+) \(account 111122223333, 4 roles\)$`).FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("ready line %q", l)
		}
		url = m[1]
	case err := <-done:
		t.Fatalf("exited early: %v", err)
	case <-ctx.Done():
		t.Fatal("no ready line")
	}
	c := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "")},
		func(o *sts.Options) { o.BaseEndpoint = aws.String(url) })
	out, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/app"), RoleSessionName: aws.String("cmd")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url + "/_double/calls")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"assume_role": 1`) {
		t.Errorf("/_double/calls = %s", b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop on cancel")
	}
	for _, secret := range []string{"wJalrXUtnFEMI", *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("secret in logs")
		}
	}
	if !strings.Contains(logs.String(), "action=AssumeRole") {
		t.Errorf("no call log line: %s", logs.String())
	}
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"account":"1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		args []string
		want string
	}{
		"no config":  {[]string{"--listen=127.0.0.1:0"}, "--config is required"},
		"missing":    {[]string{"--config=" + filepath.Join(dir, "nope.json")}, "read sts-double config"},
		"invalid":    {[]string{"--config=" + bad}, "not 12 digits"},
		"bad listen": {[]string{"--config=../../testdata/config.json", "--listen=nope"}, "listen on nope"},
	} {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tt.want)
		}
	}
}
