// Package nodemeta reads the node's harmless metadata (region, availability
// zone, identity document) from the node's IMDS, at start and, when that
// fails, again in the background with backoff until it answers
// (FetchUntil), so that the sidecar can serve it without ever putting the
// node's IMDS on the request path. It never asks for anything under iam/ or
// user-data. CheckReachable is the app's-eye view: whether an unmarked
// request from the pod gets an answer from the node's IMDS at all.
package nodemeta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Metadata is what the sidecar serves besides credentials.
type Metadata struct {
	Region           string
	AvailabilityZone string
	IdentityDocument []byte // JSON object
}

const (
	tokenTTLSeconds = "60"
	maxBody         = 64 << 10
	// requestTimeout bounds each call to the node's IMDS; Fetch's context
	// bounds the whole.
	requestTimeout = time.Second
)

var (
	regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	azRE     = regexp.MustCompile(`^([a-z]{2}(-[a-z]+)+-\d+)([a-z]|-[a-z0-9-]+)$`)
)

// RegionFromAZ derives the region from an availability zone name:
// "eu-west-1b" -> "eu-west-1", local and wavelength zones
// ("us-west-2-lax-1a") -> "us-west-2". Empty when az is not a zone name.
func RegionFromAZ(az string) string {
	m := azRE.FindStringSubmatch(az)
	if m == nil {
		return ""
	}
	return m[1]
}

// ValidRegion reports whether s looks like an AWS region name.
func ValidRegion(s string) bool { return regionRE.MatchString(s) }

// Doer sends one HTTP request: an *http.Client, or the agent's one
// outbound client (assume.NewHTTPClient), whose sockets carry its mark.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Fetch reads the metadata from the node's IMDS at endpoint (e.g.
// http://169.254.169.254): an IMDSv2 token first (IMDSv1 if the token call
// is refused with 403/404/405), then each item. Items the node does not
// serve stay empty; the error reports the first failure, with whatever was
// read.
func Fetch(ctx context.Context, client Doer, endpoint string) (Metadata, error) {
	if client == nil {
		client = &http.Client{}
	}
	base := strings.TrimRight(endpoint, "/")
	token, err := getToken(ctx, client, base)
	if err != nil {
		return Metadata{}, err
	}
	var md Metadata
	var errs []error
	get := func(path string) string {
		b, err := get(ctx, client, base+path, token)
		if err != nil {
			errs = append(errs, err)
		}
		return string(b)
	}
	if r := get("/latest/meta-data/placement/region"); ValidRegion(r) {
		md.Region = r
	}
	if az := get("/latest/meta-data/placement/availability-zone"); RegionFromAZ(az) != "" {
		md.AvailabilityZone = az
	}
	if doc := get("/latest/dynamic/instance-identity/document"); doc != "" {
		var fields map[string]any
		if err := json.Unmarshal([]byte(doc), &fields); err != nil {
			errs = append(errs, fmt.Errorf("the node's identity document is not a JSON object: %w", err))
		} else {
			md.IdentityDocument = []byte(doc)
			if r, _ := fields["region"].(string); md.Region == "" && ValidRegion(r) {
				md.Region = r
			}
		}
	}
	return md, errors.Join(errs...)
}

func getToken(ctx context.Context, client Doer, base string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	if err != nil {
		return "", fmt.Errorf("node metadata endpoint %q: %w", base, err)
	}
	req.Header.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", tokenTTLSeconds)
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("get an IMDSv2 token from the node's metadata service: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	switch resp.StatusCode {
	case http.StatusOK:
		return strings.TrimSpace(string(b)), nil
	case http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return "", nil // IMDSv1-only node, as the SDKs handle it
	default:
		return "", fmt.Errorf("get an IMDSv2 token from the node's metadata service: HTTP %d", resp.StatusCode)
	}
}

// get returns the body of a 200, nothing for a 404, an error otherwise.
func get(ctx context.Context, client Doer, url, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Aws-Ec2-Metadata-Token", token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s from the node's metadata service: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, nil
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("read %s from the node's metadata service: HTTP %d", url, resp.StatusCode)
	case err != nil:
		return nil, fmt.Errorf("read %s from the node's metadata service: %w", url, err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

// Resolve merges what the node said with the flags: the node wins when it
// answered; the region falls back to --region, then to the zone's region.
// Without a node document, a minimal one (region, zone) is made up, enough
// for the SDKs that read .region from it.
func Resolve(node Metadata, flagRegion, flagAZ string) Metadata {
	md := node
	if md.AvailabilityZone == "" {
		md.AvailabilityZone = flagAZ
	}
	if md.Region == "" {
		md.Region = flagRegion
	}
	if md.Region == "" {
		md.Region = RegionFromAZ(md.AvailabilityZone)
	}
	if md.IdentityDocument == nil && md.Region != "" {
		doc := map[string]string{"region": md.Region, "version": "2017-09-30"}
		if md.AvailabilityZone != "" {
			doc["availabilityZone"] = md.AvailabilityZone
		}
		md.IdentityDocument, _ = json.MarshalIndent(doc, "", "  ")
	}
	return md
}
