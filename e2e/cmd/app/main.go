// Command app is the e2e suite's stand-in for a user's workload: an
// unmodified program using the AWS SDK's default credential chain. It prints
// one JSON line per check so the tests (which run it with kubectl exec or read
// its log) can assert what an app in the pod actually gets. Secret keys and
// session tokens are never printed: only AccessKeyIds, role names and ARNs.
//
//	app creds                  default chain → AccessKeyId, role, sts:GetCallerIdentity
//	app imds [-v1] [-endpoint URL] [-H K:V] PATH
//	app run                    creds once at start (the very first IMDS call), then wait for SIGTERM
//	app once                   creds once; exit 1 on failure (Jobs)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// CredsResult is what `app creds` prints.
type CredsResult struct {
	OK          bool   `json:"ok"`
	AccessKeyID string `json:"access_key_id,omitempty"`
	Source      string `json:"source,omitempty"`
	Role        string `json:"role,omitempty"`
	CallerARN   string `json:"caller_arn,omitempty"`
	Error       string `json:"error,omitempty"`
	Millis      int64  `json:"ms"`
}

// IMDSResult is what `app imds` prints.
type IMDSResult struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: app creds|imds|run|once")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch os.Args[1] {
	case "creds":
		r := creds(ctx)
		emit(r)
		if !r.OK {
			os.Exit(1)
		}
	case "once":
		r := creds(ctx)
		emit(r)
		if !r.OK {
			os.Exit(1)
		}
	case "run":
		// The first call happens before anything else: it is the race
		// kube2iam-style daemons lose at pod start.
		r := creds(ctx)
		fmt.Print("first-call: ")
		emit(r)
		<-ctx.Done()
	case "imds":
		os.Exit(imdsCmd(ctx, os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use creds, imds, run or once\n", os.Args[1])
		os.Exit(2)
	}
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func creds(ctx context.Context) CredsResult {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r := CredsResult{}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		r.Error = fmt.Sprintf("load config: %v", err)
		r.Millis = time.Since(start).Milliseconds()
		return r
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		r.Error = fmt.Sprintf("retrieve credentials: %v", err)
		r.Millis = time.Since(start).Milliseconds()
		return r
	}
	r.AccessKeyID, r.Source = c.AccessKeyID, c.Source
	out, err := imds.NewFromConfig(cfg).GetMetadata(ctx, &imds.GetMetadataInput{Path: "iam/security-credentials/"})
	if err != nil {
		r.Error = fmt.Sprintf("list role: %v", err)
		r.Millis = time.Since(start).Milliseconds()
		return r
	}
	b, _ := io.ReadAll(out.Content)
	out.Content.Close()
	r.Role = strings.TrimSpace(string(b))
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		r.Error = fmt.Sprintf("sts:GetCallerIdentity: %v", err)
		r.Millis = time.Since(start).Milliseconds()
		return r
	}
	r.CallerARN = aws.ToString(id.Arn)
	r.OK = true
	r.Millis = time.Since(start).Milliseconds()
	return r
}

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func imdsCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("imds", flag.ContinueOnError)
	v1 := fs.Bool("v1", false, "plain IMDSv1 request (no token)")
	endpoint := fs.String("endpoint", "http://169.254.169.254", "metadata endpoint")
	var hs headers
	fs.Var(&hs, "H", "extra header K:V (repeatable)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: app imds [-v1] [-endpoint URL] [-H K:V] PATH")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	r := IMDSResult{}
	token := ""
	if !*v1 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, *endpoint+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := client.Do(req)
		if err != nil {
			r.Error = fmt.Sprintf("get token: %v", err)
			emit(r)
			return 1
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			r.Status, r.Error = resp.StatusCode, "token request refused"
			emit(r)
			return 1
		}
		token = string(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *endpoint+fs.Arg(0), nil)
	if err != nil {
		r.Error = err.Error()
		emit(r)
		return 2
	}
	if token != "" {
		req.Header.Set("X-aws-ec2-metadata-token", token)
	}
	for _, h := range hs {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		r.Error = fmt.Sprintf("get %s: %v", fs.Arg(0), err)
		emit(r)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	r.Status, r.Body = resp.StatusCode, redact(b)
	emit(r)
	return 0
}

// redact keeps a credentials document's identifying fields and drops the
// secret ones, so the tests can compare AccessKeyIds without ever logging a
// secret; other bodies are returned as they are (truncated).
func redact(b []byte) string {
	var doc map[string]any
	if json.Unmarshal(b, &doc) == nil {
		if _, ok := doc["AccessKeyId"]; ok {
			for _, k := range []string{"SecretAccessKey", "Token"} {
				if _, ok := doc[k]; ok {
					doc[k] = "<redacted>"
				}
			}
			out, _ := json.Marshal(doc)
			return string(out)
		}
	}
	s := string(b)
	if len(s) > 2048 {
		s = s[:2048]
	}
	return s
}
