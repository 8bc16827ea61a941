package conformance

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/podrole/podrole/stsdouble"
)

// serviceAccountToken signs a projected-token-like JWT with stsdouble's
// test OIDC key (kid rsa-1, trusted by testdata/sts-double.json).
func serviceAccountToken(t *testing.T, sub string, exp time.Time) string {
	t.Helper()
	b, err := os.ReadFile("../../stsdouble/testdata/oidc-rsa.key")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "rsa-1", "typ": "JWT"})
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"iss": "https://oidc.podrole.test", "sub": sub, "aud": []string{"sts.amazonaws.com"},
		"iat": now, "nbf": now, "exp": exp.Unix()})
	signed := enc(hdr) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc(sig)
}

// TestWebIdentitySource: with --source=web-identity the sidecar assumes the
// role with the projected token, and clients get exactly that key. The node
// IMDS answers (with the node role) and the sidecar asks it nothing: in a
// pod the rules exempt nothing then, and any such call would come back to
// the agent itself. Only the node IMDS check (what an app would get: a
// token PUT and the listing) is sent.
func TestWebIdentitySource(t *testing.T) {
	all := clients(t)
	st := startSTS(t)
	node := startNodeIMDS(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(serviceAccountToken(t, "system:serviceaccount:default:web", time.Now().Add(time.Hour))), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, st, sidecarOpts{requireV2: true, nodeURL: node.URL, extra: []string{"--source=web-identity", "--token-file=" + tokFile}})
	t.Cleanup(func() {
		if p := node.requested(); len(p) != 0 {
			t.Errorf("with --source=web-identity the sidecar asked the node's IMDS %v", p)
		}
		checkCheckRequests(t, node)
	})
	if r := call(t, http.MethodGet, sc.URL+pathIdDoc, withToken(token(t, sc, 60))); r.status != 404 {
		t.Errorf("identity document with web identity: %d %q, want 404 (nothing comes from the node)", r.status, r.body)
	}
	l := st.latest(t, sc)
	if l.Action != "AssumeRoleWithWebIdentity" || l.Caller != "system:serviceaccount:default:web" {
		t.Fatalf("the sidecar got its credentials by %s as %s, want AssumeRoleWithWebIdentity as the service account", l.Action, l.Caller)
	}
	for _, c := range all {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.get(t, sc.URL, true)
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessKeyID != l.AccessKeyID {
				t.Fatalf("client got %q, want %q", got.AccessKeyID, l.AccessKeyID)
			}
			if arn, err := callerIdentity(t, st, got); err != nil || arn != l.AssumedRoleARN {
				t.Errorf("GetCallerIdentity = %s %v, want %s", arn, err, l.AssumedRoleARN)
			}
		})
	}
}

// TestNotStartedWithoutCredentials: while STS refuses, the sidecar does not
// report started and serves no credentials (an app would otherwise start
// without its role); when STS is back it starts on its own.
func TestNotStartedWithoutCredentials(t *testing.T) {
	t.Parallel() // sleep-bound; runs after the tests that set the environment
	tests := []struct {
		name string
		prep func(*stsServer)
		undo func(*stsServer)
		opts func(t *testing.T) sidecarOpts
	}{
		{"STS down", func(s *stsServer) { s.SetOutage(stsdouble.Outage503) }, func(s *stsServer) { s.SetOutage(stsdouble.OutageNone) },
			func(t *testing.T) sidecarOpts { return sidecarOpts{nodeURL: startNodeIMDS(t).URL} }},
		{"STS drops connections", func(s *stsServer) { s.SetOutage(stsdouble.OutageClose) }, func(s *stsServer) { s.SetOutage(stsdouble.OutageNone) },
			func(t *testing.T) sidecarOpts { return sidecarOpts{nodeURL: startNodeIMDS(t).URL} }},
		{"node IMDS down", nil, nil, func(t *testing.T) sidecarOpts { return sidecarOpts{} }},
		{"token not trusted", nil, nil, func(t *testing.T) sidecarOpts {
			f := filepath.Join(t.TempDir(), "token")
			os.WriteFile(f, []byte(serviceAccountToken(t, "system:serviceaccount:kube-system:admin", time.Now().Add(time.Hour))), 0o600)
			return sidecarOpts{extra: []string{"--source=web-identity", "--token-file=" + f}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := startSTS(t)
			if tt.prep != nil {
				tt.prep(st)
			}
			o := tt.opts(t)
			o.noWait = true
			sc := startSidecar(t, st, o)
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
				if r := call(t, http.MethodGet, sc.HealthURL+"/started", nil); r.status == 200 {
					t.Fatalf("/started is 200 without credentials")
				}
				if r := call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil); r.status == 200 {
					t.Fatalf("credentials served before STS gave any")
				}
			}
			if len(st.Issued(appRoleARN)) != 0 {
				t.Fatalf("the double issued credentials")
			}
			if tt.undo == nil {
				return
			}
			tt.undo(st)
			if err := waitHTTP(sc.HealthURL+"/started", sc.done, 70*time.Second); err != nil {
				t.Fatalf("did not start after STS came back: %v", err)
			}
			doc := credsDoc(t, call(t, http.MethodGet, sc.URL+pathCreds+appRole, nil))
			latestFor(t, st, sc, doc["AccessKeyId"])
		})
	}
}
