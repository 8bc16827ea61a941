package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// IMDSClient does the full IMDSv2 credential sequence the AWS SDKs do: PUT a
// token, GET the role listing, GET the role's credentials.
type IMDSClient struct {
	Base string // http://127.0.0.1:port
	HTTP *http.Client
}

// NewIMDSClient returns a client with keep-alive connections for concurrency
// workers: at most one connection each, as that many SDK clients would hold
// (without the cap, a shared transport drifts to more connections than
// workers, which the agent sheds past its limit of 1024).
func NewIMDSClient(base string, concurrency int) *IMDSClient {
	tr := &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, MaxConnsPerHost: concurrency, DisableCompression: true}
	return &IMDSClient{Base: base, HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// Sequence is an Op: token, listing, credentials; each answer checked.
func (c *IMDSClient) Sequence(ctx context.Context) error {
	tok, err := c.do(ctx, http.MethodPut, "/latest/api/token", "", map[string]string{"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": "21600"})
	if err != nil {
		return err
	}
	role, err := c.do(ctx, http.MethodGet, "/latest/meta-data/iam/security-credentials/", string(tok), nil)
	if err != nil {
		return err
	}
	creds, err := c.do(ctx, http.MethodGet, "/latest/meta-data/iam/security-credentials/"+string(role), string(tok), nil)
	if err != nil {
		return err
	}
	if !bytes.Contains(creds, []byte(`"AccessKeyId"`)) {
		return fmt.Errorf("credentials document without AccessKeyId (%d bytes)", len(creds))
	}
	return nil
}

func (c *IMDSClient) do(ctx context.Context, method, path, token string, hdr map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Aws-Ec2-Metadata-Token", token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
}
