package stsdouble

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// jwks is a parsed JSON Web Key Set: public keys by key id.
type jwks map[string]crypto.PublicKey

type jwkJSON struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func parseJWKS(b []byte) (jwks, error) {
	var set struct {
		Keys []jwkJSON `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	out := jwks{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, k.Kid, err)
		}
		out[k.Kid] = pub
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS has no signing keys")
	}
	return out, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}

func (k jwkJSON) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64int(k.N)
		if err != nil {
			return nil, fmt.Errorf("n: %w", err)
		}
		e, err := b64int(k.E)
		if err != nil || !e.IsInt64() || e.Int64() < 3 {
			return nil, fmt.Errorf("bad exponent e")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("curve %q not supported (ES256 needs P-256)", k.Crv)
		}
		x, err := b64int(k.X)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		y, err := b64int(k.Y)
		if err != nil {
			return nil, fmt.Errorf("y: %w", err)
		}
		if x.BitLen() > 256 || y.BitLen() > 256 {
			return nil, fmt.Errorf("point not on P-256")
		}
		// The uncompressed SEC 1 encoding, which the parser checks is on the curve.
		point := make([]byte, 65)
		point[0] = 4
		x.FillBytes(point[1:33])
		y.FillBytes(point[33:])
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return nil, fmt.Errorf("point not on P-256: %w", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("key type %q not supported: use RSA or EC", k.Kty)
}

// keySource yields an OIDC provider's keys, refetching from a URL when a
// token names a key id it has not seen (key rotation), at most every minRefetch
// of the double's clock.
type keySource struct {
	provider   OIDCProvider
	client     *http.Client
	minRefetch time.Duration
	now        func() time.Time

	mu        sync.Mutex
	keys      jwks
	lastFetch time.Time
}

func newKeySource(p OIDCProvider, base *http.Client, minRefetch time.Duration, now func() time.Time) (*keySource, error) {
	ks := &keySource{provider: p, client: base, minRefetch: minRefetch, now: now}
	if p.JWKSFile != "" {
		b, err := os.ReadFile(p.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("read JWKS of %s: %w", p.Issuer, err)
		}
		if ks.keys, err = parseJWKS(b); err != nil {
			return nil, fmt.Errorf("JWKS file of %s: %w", p.Issuer, err)
		}
		return ks, nil
	}
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file of %s: %w", p.Issuer, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s of %s holds no PEM certificate", p.CAFile, p.Issuer)
		}
		ks.client = &http.Client{
			Timeout:   base.Timeout,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		}
	}
	return ks, nil
}

// key returns the key with id kid, fetching the set if needed.
func (ks *keySource) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k, ok := ks.keys[kid]; ok {
		return k, nil
	}
	if ks.provider.JWKSURL == "" || ks.now().Sub(ks.lastFetch) < ks.minRefetch {
		return nil, errUnknownKid
	}
	ks.lastFetch = ks.now()
	keys, err := ks.fetch(ctx)
	if err != nil {
		return nil, err
	}
	ks.keys = keys
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, errUnknownKid
}

var errUnknownKid = errors.New("token signed by an unknown key")

type fetchError struct{ err error }

func (e fetchError) Error() string { return e.err.Error() }
func (e fetchError) Unwrap() error { return e.err }

func (ks *keySource) fetch(ctx context.Context) (jwks, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.provider.JWKSURL, nil)
	if err != nil {
		return nil, fetchError{fmt.Errorf("JWKS request for %s: %w", ks.provider.Issuer, err)}
	}
	if f := ks.provider.BearerTokenFile; f != "" {
		tok, err := os.ReadFile(f)
		if err != nil {
			return nil, fetchError{fmt.Errorf("read bearer token for %s JWKS: %w", ks.provider.Issuer, err)}
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, fetchError{fmt.Errorf("fetch JWKS of %s: %w", ks.provider.Issuer, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fetchError{fmt.Errorf("read JWKS of %s: %w", ks.provider.Issuer, err)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fetchError{fmt.Errorf("fetch JWKS of %s: HTTP %d", ks.provider.Issuer, resp.StatusCode)}
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return nil, fetchError{fmt.Errorf("JWKS of %s: %w", ks.provider.Issuer, err)}
	}
	return keys, nil
}

// jwtClaims are the claims STS looks at.
type jwtClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	ExpiresAt *int64   `json:"exp"`
	NotBefore *int64   `json:"nbf"`
}

// audience is "aud": a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud is neither a string nor a list of strings")
	}
	*a = many
	return nil
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// splitJWT decodes a compact JWS without verifying it.
func splitJWT(tok string) (jwtHeader, jwtClaims, []byte, []byte, error) {
	var h jwtHeader
	var c jwtClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return h, c, nil, nil, errors.New("not a compact JWT (three dot-separated parts)")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, c, nil, nil, errors.New("header is not base64url")
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return h, c, nil, nil, errors.New("payload is not base64url")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return h, c, nil, nil, errors.New("signature is not base64url")
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return h, c, nil, nil, errors.New("header is not JSON")
	}
	if err := json.Unmarshal(cb, &c); err != nil {
		return h, c, nil, nil, fmt.Errorf("claims are not valid: %w", err)
	}
	return h, c, []byte(parts[0] + "." + parts[1]), sig, nil
}

// verifyJWS checks sig over signed with pub for alg RS256 or ES256.
func verifyJWS(alg string, pub crypto.PublicKey, signed, sig []byte) error {
	sum := sha256.Sum256(signed)
	switch alg {
	case "RS256":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return errors.New("RS256 token but the key is not RSA")
		}
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig)
	case "ES256":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("ES256 token but the key is not EC")
		}
		if len(sig) != 64 {
			return errors.New("ES256 signature is not 64 bytes")
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k, sum[:], r, s) {
			return errors.New("bad ES256 signature")
		}
		return nil
	}
	return fmt.Errorf("algorithm %q not supported", alg)
}
