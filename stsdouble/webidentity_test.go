package stsdouble

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// signer makes web identity tokens with the testdata keys.
type signer struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func loadSigner(t *testing.T) signer {
	t.Helper()
	load := func(name string) any {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return signer{rsa: load("oidc-rsa.key").(*rsa.PrivateKey), ec: load("oidc-ec.key").(*ecdsa.PrivateKey)}
}

func (s signer) token(t *testing.T, alg, kid string, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	hb, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	cb, _ := json.Marshal(claims)
	signed := enc(hb) + "." + enc(cb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch alg {
	case "RS256":
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, s.rsa, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case "ES256":
		r, ss, err := ecdsa.Sign(rand.Reader, s.ec, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(pad32(r), pad32(ss)...)
	}
	return signed + "." + enc(sig)
}

func pad32(n *big.Int) []byte {
	b := make([]byte, 32)
	n.FillBytes(b)
	return b
}

func claims(mod func(map[string]any)) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": issuer, "sub": "system:serviceaccount:default:web", "aud": []string{"sts.amazonaws.com"}, "iat": now, "nbf": now - 10, "exp": now + 3600}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestAssumeRoleWithWebIdentity(t *testing.T) {
	f := newFixture(t, nil)
	s := loadSigner(t)
	anon := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
	call := func(role, tok string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
		return anon.AssumeRoleWithWebIdentity(ctx(t), &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(role), RoleSessionName: aws.String("default-web"), WebIdentityToken: aws.String(tok)})
	}
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run("happy "+alg, func(t *testing.T) {
			kid := map[string]string{"RS256": "rsa-1", "ES256": "ec-1"}[alg]
			out, err := call(appRole, s.token(t, alg, kid, claims(nil)))
			if err != nil {
				t.Fatal(err)
			}
			if *out.SubjectFromWebIdentityToken != "system:serviceaccount:default:web" || *out.Audience != "sts.amazonaws.com" ||
				*out.Provider != "arn:aws:iam::111122223333:oidc-provider/oidc.podrole.test" ||
				*out.AssumedRoleUser.Arn != "arn:aws:sts::111122223333:assumed-role/app/default-web" {
				t.Errorf("got sub %s aud %s provider %s arn %s", *out.SubjectFromWebIdentityToken, *out.Audience, *out.Provider, *out.AssumedRoleUser.Arn)
			}
			// The issued credentials are usable against the double.
			c := f.client("us-east-1", *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
			id, err := c.GetCallerIdentity(ctx(t), &sts.GetCallerIdentityInput{})
			if err != nil || *id.Arn != *out.AssumedRoleUser.Arn {
				t.Fatalf("GetCallerIdentity: %v", err)
			}
		})
	}
	if got := f.d.Calls(appRole).AssumeRoleWithWebIdentity; got != 2 {
		t.Errorf("AssumeRoleWithWebIdentity count %d, want 2", got)
	}
	good := s.token(t, "RS256", "rsa-1", claims(nil))
	tampered := strings.Split(good, ".")
	tampered[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + issuer + `","sub":"system:serviceaccount:kube-system:admin","aud":"sts.amazonaws.com","exp":9999999999}`))
	tests := []struct {
		name, role, token, code string
		status                  int
	}{
		{"wrong audience", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["aud"] = "kubernetes" })), "InvalidIdentityToken", 400},
		{"expired", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["exp"] = time.Now().Unix() - 5 })), "ExpiredTokenException", 400},
		{"no exp", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { delete(c, "exp") })), "InvalidIdentityToken", 400},
		{"not yet valid", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["nbf"] = time.Now().Unix() + 600 })), "InvalidIdentityToken", 400},
		{"unknown issuer", appRole, s.token(t, "RS256", "rsa-1", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "InvalidIdentityToken", 400},
		{"tampered claims", appRole, strings.Join(tampered, "."), "InvalidIdentityToken", 400},
		{"unknown kid", appRole, s.token(t, "RS256", "rsa-2", claims(nil)), "InvalidIdentityToken", 400},
		{"alg none", appRole, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + strings.Split(good, ".")[1] + ".", "InvalidIdentityToken", 400},
		{"not a jwt", appRole, "not-a-jwt", "InvalidIdentityToken", 400},
		{"subject not trusted", appRole, s.token(t, "ES256", "ec-1", claims(func(c map[string]any) { c["sub"] = "system:serviceaccount:kube-system:web" })), "AccessDenied", 403},
		{"role without web trust", "arn:aws:iam::111122223333:role/other", good, "AccessDenied", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := call(tt.role, tt.token)
			if err == nil {
				t.Fatal("call succeeded")
			}
			if code, status := apiErr(t, err); code != tt.code || status != tt.status {
				t.Errorf("got %s %d (%v), want %s %d", code, status, err, tt.code, tt.status)
			}
		})
	}
	if strings.Contains(f.logs(), strings.Split(good, ".")[2]) {
		t.Errorf("a token signature leaked into the logs")
	}
}

// TestJWKSFromURL serves the JWKS over TLS with a bearer token, as the
// kube-apiserver's /openid/v1/jwks does, and rotates keys behind it.
func TestJWKSFromURL(t *testing.T) {
	s := loadSigner(t)
	jwksBytes, err := os.ReadFile("testdata/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keys := jwksBytes
	var fetches int
	idp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openid/v1/jwks" || r.Header.Get("Authorization") != "Bearer sa-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fetches++
		w.Write(keys)
	}))
	defer idp.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.Certificate().Raw}), 0o644)
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte("sa-token\n"), 0o600)

	f := newFixture(t, func(c *Config) {
		c.OIDCProviders[0].JWKSFile = ""
		c.OIDCProviders[0].JWKSURL = idp.URL + "/openid/v1/jwks"
		c.OIDCProviders[0].CAFile = ca
		c.OIDCProviders[0].BearerTokenFile = tokFile
	})
	anon := sts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1}, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
	call := func(tok string) error {
		_, err := anon.AssumeRoleWithWebIdentity(ctx(t), &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("web"), WebIdentityToken: aws.String(tok)})
		return err
	}
	if err := call(s.token(t, "RS256", "rsa-1", claims(nil))); err != nil {
		t.Fatal(err)
	}
	if err := call(s.token(t, "ES256", "ec-1", claims(nil))); err != nil {
		t.Fatal(err)
	}
	if fetches != 1 {
		t.Errorf("JWKS fetched %d times for two tokens with known keys, want 1", fetches)
	}

	// A wrong bearer token: the IdP refuses, STS says it could not reach it.
	os.WriteFile(tokFile, []byte("stale"), 0o600)
	f.clk.Advance(testRefetch) // the refetch limiter goes by the double's clock
	err = call(s.token(t, "RS256", "rotated", claims(nil)))
	if code, status := apiErr(t, err); code != "IDPCommunicationError" || status != 400 {
		t.Errorf("IdP refusing: got %s %d", code, status)
	}
	// Key rotation: the IdP now publishes "rotated"; a token naming it triggers
	// a refetch, but not within testRefetch of the last one (junk key ids must
	// not hammer the IdP): the clock has not moved since.
	os.WriteFile(tokFile, []byte("sa-token"), 0o600)
	var set map[string][]map[string]string
	json.Unmarshal(jwksBytes, &set)
	set["keys"][0]["kid"] = "rotated"
	mu.Lock()
	keys, _ = json.Marshal(set)
	before := fetches
	mu.Unlock()
	err = call(s.token(t, "RS256", "rotated", claims(nil)))
	mu.Lock()
	after := fetches
	mu.Unlock()
	if code, status := apiErr(t, err); code != "InvalidIdentityToken" || status != 400 || after != before {
		t.Errorf("unknown key id within the refetch limit: got %s %d after %d JWKS fetches, want InvalidIdentityToken 400 and no fetch", code, status, after-before)
	}
	f.clk.Advance(testRefetch)
	if err := call(s.token(t, "RS256", "rotated", claims(nil))); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}
