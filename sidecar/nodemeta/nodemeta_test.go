package nodemeta

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// Read over IMDSv2 with a token, without X-Forwarded-For, and only the three
// harmless items.
func TestFetchFromNode(t *testing.T) {
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	md, err := Fetch(context.Background(), nil, node.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if md.Region != "eu-west-1" || md.AvailabilityZone != "eu-west-1b" || string(md.IdentityDocument) != node.Document {
		t.Fatalf("got %+v", md)
	}
	want := []string{
		"PUT /latest/api/token", "GET /latest/meta-data/placement/region",
		"GET /latest/meta-data/placement/availability-zone", "GET /latest/dynamic/instance-identity/document",
	}
	if got := node.Paths(); !slices.Equal(got, want) {
		t.Fatalf("node asked for %v, want %v", got, want)
	}
}

// An IMDSv1-only node (token call 403/404/405) still answers, to GETs
// without a token: one the node never issued would be refused (401).
func TestFetchIMDSv1Node(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed} {
		node := fakeaws.NewNodeIMDS(t, "", "us-west-2-lax-1a")
		node.TokenStatus, node.AllowV1 = status, true
		node.Document = "" // neither region nor document: only the zone
		md, err := Fetch(context.Background(), nil, node.URL)
		if err != nil {
			t.Fatalf("token %d: %v", status, err)
		}
		if md.AvailabilityZone != "us-west-2-lax-1a" || md.Region != "" || md.IdentityDocument != nil {
			t.Fatalf("token %d: got %+v", status, md)
		}
		for _, q := range node.Requests() {
			if q.Token {
				t.Errorf("token %d: %s %s carried a token", status, q.Method, q.Path)
			}
		}
	}
}

// A node that does not answer in time costs the caller's deadline, no more.
func TestFetchSlowNode(t *testing.T) {
	node := fakeaws.NewNodeIMDS(t, "eu-west-1", "eu-west-1b")
	release := node.Block()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, nil, node.URL)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error from a node that never answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not honour its context")
	}
}

// Garbage from the node is not served.
func TestFetchRejectsGarbage(t *testing.T) {
	node := fakeaws.NewNodeIMDS(t, "<html>captive portal</html>", "not a zone")
	node.Document = "{broken"
	md, err := Fetch(context.Background(), nil, node.URL)
	if err == nil || !strings.Contains(err.Error(), "identity document") {
		t.Fatalf("err = %v", err)
	}
	if md.Region != "" || md.AvailabilityZone != "" || md.IdentityDocument != nil {
		t.Fatalf("garbage kept: %+v", md)
	}
}

func TestResolve(t *testing.T) {
	node := Metadata{Region: "eu-west-1", AvailabilityZone: "eu-west-1b", IdentityDocument: []byte(`{"region":"eu-west-1"}`)}
	tests := []struct {
		name             string
		node             Metadata
		region, az       string
		wantRegion       string
		wantAZ, wantDocs string
	}{
		{"node wins", node, "us-east-1", "us-east-1a", "eu-west-1", "eu-west-1b", `{"region":"eu-west-1"}`},
		{"flags", Metadata{}, "us-east-1", "us-east-1c", "us-east-1", "us-east-1c", `"availabilityZone": "us-east-1c"`},
		{"region from zone", Metadata{}, "", "ap-southeast-2a", "ap-southeast-2", "ap-southeast-2a", `"region": "ap-southeast-2"`},
		{"region only", Metadata{}, "us-gov-west-1", "", "us-gov-west-1", "", `"region": "us-gov-west-1"`},
		{"nothing", Metadata{}, "", "", "", "", ""},
	}
	for _, tt := range tests {
		md := Resolve(tt.node, tt.region, tt.az)
		if md.Region != tt.wantRegion || md.AvailabilityZone != tt.wantAZ || !strings.Contains(string(md.IdentityDocument), tt.wantDocs) ||
			(tt.wantDocs == "" && md.IdentityDocument != nil) {
			t.Errorf("%s: got %+v (doc %s)", tt.name, md, md.IdentityDocument)
		}
	}
}

func TestRegionFromAZ(t *testing.T) {
	for az, want := range map[string]string{
		"us-east-1a": "us-east-1", "eu-central-2c": "eu-central-2", "us-gov-west-1b": "us-gov-west-1",
		"us-west-2-lax-1a": "us-west-2", "us-east-1-wl1-bos-wlz-1": "us-east-1", "ap-northeast-1d": "ap-northeast-1",
		"": "", "us-east-1": "", "useast1a": "", "US-EAST-1A": "", "us-east-1a\n": "",
	} {
		if got := RegionFromAZ(az); got != want {
			t.Errorf("RegionFromAZ(%q) = %q, want %q", az, got, want)
		}
	}
}
