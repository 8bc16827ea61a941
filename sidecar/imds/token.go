package imds

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
	"time"
)

// Token lifetimes accepted by PUT /latest/api/token, as real IMDS.
const (
	MinTokenTTL = 1 * time.Second
	MaxTokenTTL = 21600 * time.Second
)

// Token layout: expiry (8 bytes, Unix nanoseconds, big endian) | nonce (16)
// | HMAC-SHA256 of the first two (32), base64url. Tokens describe themselves,
// so the sidecar keeps no table of them: memory stays flat whatever clients
// do, and any number of concurrent tokens stay valid for their whole TTL.
const (
	tokenExpiryLen  = 8
	tokenNonceLen   = 16
	tokenPayloadLen = tokenExpiryLen + tokenNonceLen
	tokenLen        = tokenPayloadLen + sha256.Size
)

// Strict: the unused low bits of the last character must be zero, so each
// token has exactly one spelling.
var (
	tokenEncoding   = base64.RawURLEncoding.Strict()
	tokenEncodedLen = tokenEncoding.EncodedLen(tokenLen)
)

// Tokens issues and checks IMDSv2 session tokens with a per-process key.
type Tokens struct {
	key [32]byte
	now func() time.Time
	// macs holds *tokenMAC: keyed HMAC-SHA256 states reused across
	// requests, because a new one per token (hmac.New) was a third of the
	// agent's allocations on the credential path.
	macs sync.Pool
}

// tokenMAC is an HMAC-SHA256 with the issuer's key, and room for its sum.
type tokenMAC struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewTokens returns an issuer with a fresh random key; now is the clock
// (time.Now when nil).
func NewTokens(now func() time.Time) (*Tokens, error) {
	if now == nil {
		now = time.Now
	}
	t := &Tokens{now: now}
	if _, err := rand.Read(t.key[:]); err != nil {
		return nil, fmt.Errorf("generate the token signing key: %w", err)
	}
	t.macs.New = func() any { return &tokenMAC{h: hmac.New(sha256.New, t.key[:])} }
	return t, nil
}

// mac computes the HMAC of payload under t's key into m.sum. Give m back
// with t.macs.Put once m.sum is used.
func (t *Tokens) mac(payload []byte) (m *tokenMAC) {
	m = t.macs.Get().(*tokenMAC)
	m.h.Reset()
	m.h.Write(payload)
	m.h.Sum(m.sum[:0])
	return m
}

// Issue returns a token valid for ttl from now.
func (t *Tokens) Issue(ttl time.Duration) (string, error) {
	var b [tokenLen]byte
	binary.BigEndian.PutUint64(b[:tokenExpiryLen], uint64(t.now().Add(ttl).UnixNano()))
	if _, err := rand.Read(b[tokenExpiryLen:tokenPayloadLen]); err != nil {
		return "", fmt.Errorf("generate a token nonce: %w", err)
	}
	m := t.mac(b[:tokenPayloadLen])
	copy(b[tokenPayloadLen:], m.sum[:])
	t.macs.Put(m)
	return tokenEncoding.EncodeToString(b[:]), nil
}

// Valid reports whether tok was issued by t and has not expired.
func (t *Tokens) Valid(tok string) bool {
	if len(tok) != tokenEncodedLen {
		return false
	}
	var b [tokenLen]byte
	if n, err := tokenEncoding.Decode(b[:], []byte(tok)); err != nil || n != tokenLen {
		return false
	}
	m := t.mac(b[:tokenPayloadLen])
	ok := hmac.Equal(m.sum[:], b[tokenPayloadLen:])
	t.macs.Put(m)
	if !ok {
		return false
	}
	exp := int64(binary.BigEndian.Uint64(b[:tokenExpiryLen])) //nolint:gosec // G115: MAC-checked, so Issue wrote it from an int64
	return t.now().UnixNano() < exp
}
