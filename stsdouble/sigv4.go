package stsdouble

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateFmt   = "20060102T150405Z"
)

// sigRequest is a SigV4 signature found on a request, from the Authorization
// header or from presigned query parameters.
type sigRequest struct {
	accessKeyID   string
	date          string // YYYYMMDD from the scope
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       string
	securityToken string
	presigned     bool
	expires       int // X-Amz-Expires, presigned only
}

// parseSignature extracts the signature, or returns nil (no authentication at
// all) or an STS error for a malformed one.
func parseSignature(r *http.Request) (*sigRequest, *apiError) {
	q := r.URL.Query()
	auth := r.Header.Get("Authorization")
	switch {
	case auth != "":
		alg, rest, _ := strings.Cut(auth, " ")
		if alg != sigAlgorithm {
			return nil, errIncompleteSignature("Unsupported AWS 'algorithm': '" + alg + "'")
		}
		fields := map[string]string{}
		for _, part := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok {
				fields[k] = v
			}
		}
		for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
			if fields[k] == "" {
				return nil, errIncompleteSignature(fmt.Sprintf("Authorization header requires '%s' parameter. Authorization=%s", k, sigAlgorithm))
			}
		}
		s := &sigRequest{signedHeaders: strings.Split(fields["SignedHeaders"], ";"), signature: fields["Signature"]}
		if e := s.setCredential(fields["Credential"]); e != nil {
			return nil, e
		}
		s.amzDate = r.Header.Get("X-Amz-Date")
		if s.amzDate == "" {
			if d, err := http.ParseTime(r.Header.Get("Date")); err == nil {
				s.amzDate = d.UTC().Format(amzDateFmt)
			}
		}
		if s.amzDate == "" {
			return nil, errIncompleteSignature("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
		}
		s.securityToken = r.Header.Get("X-Amz-Security-Token")
		return s, nil
	case q.Get("X-Amz-Algorithm") != "" || q.Get("X-Amz-Signature") != "":
		if q.Get("X-Amz-Algorithm") != sigAlgorithm {
			return nil, errIncompleteSignature("Unsupported AWS 'algorithm': '" + q.Get("X-Amz-Algorithm") + "'")
		}
		for _, k := range []string{"X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Date"} {
			if q.Get(k) == "" {
				return nil, errIncompleteSignature(fmt.Sprintf("AWS query-string parameters must include '%s'. Re-examine the query-string parameters.", k))
			}
		}
		s := &sigRequest{
			signedHeaders: strings.Split(q.Get("X-Amz-SignedHeaders"), ";"),
			signature:     q.Get("X-Amz-Signature"),
			amzDate:       q.Get("X-Amz-Date"),
			securityToken: q.Get("X-Amz-Security-Token"),
			presigned:     true,
		}
		if v := q.Get("X-Amz-Expires"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 604800 {
				return nil, errValidation("X-Amz-Expires must be between 1 and 604800 seconds")
			}
			s.expires = n
		}
		if e := s.setCredential(q.Get("X-Amz-Credential")); e != nil {
			return nil, e
		}
		return s, nil
	}
	return nil, nil
}

func (s *sigRequest) setCredential(cred string) *apiError {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return errIncompleteSignature("Credential should be scoped to a valid region, not ''. Credential=" + redactCredential(cred))
	}
	s.accessKeyID, s.date, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// redactCredential keeps the scope of a Credential= value, never the key id,
// so error messages carry no credentials.
func redactCredential(cred string) string {
	if _, scope, ok := strings.Cut(cred, "/"); ok {
		return "<key>/" + scope
	}
	return "<key>"
}

// checkScope validates the credential scope and the request time against now.
func (s *sigRequest) checkScope(now time.Time, regions []string, skew time.Duration) *apiError {
	if s.service != "sts" {
		return errSignature("Credential should be scoped to correct service: 'sts'. ")
	}
	if len(regions) > 0 {
		ok := false
		for _, r := range regions {
			ok = ok || r == s.region
		}
		if !ok {
			return errSignature(fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. ", s.region))
		}
	} else if s.region == "" {
		return errSignature("Credential should be scoped to a valid region, not ''. ")
	}
	t, err := time.Parse(amzDateFmt, s.amzDate)
	if err != nil {
		return errIncompleteSignature(fmt.Sprintf("Date must be in ISO-8601 'basic format'. Got '%s'. See http://en.wikipedia.org/wiki/ISO_8601", s.amzDate))
	}
	if t.Format("20060102") != s.date {
		return errSignature(fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", s.date, t.Format("20060102"), s.amzDate))
	}
	if s.presigned && s.expires > 0 {
		if now.After(t.Add(time.Duration(s.expires) * time.Second)) {
			return errSignature(fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %d sec.)", t.Add(time.Duration(s.expires)*time.Second).Format(amzDateFmt), now.UTC().Format(amzDateFmt), now.UTC().Format(amzDateFmt), s.expires))
		}
		if t.After(now.Add(skew)) {
			return errSignature(fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %d min.)", s.amzDate, now.Add(skew).UTC().Format(amzDateFmt), now.UTC().Format(amzDateFmt), int(skew.Minutes())))
		}
		return nil
	}
	if t.Before(now.Add(-skew)) {
		return errSignature(fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %d min.)", s.amzDate, now.Add(-skew).UTC().Format(amzDateFmt), now.UTC().Format(amzDateFmt), int(skew.Minutes())))
	}
	if t.After(now.Add(skew)) {
		return errSignature(fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %d min.)", s.amzDate, now.Add(skew).UTC().Format(amzDateFmt), now.UTC().Format(amzDateFmt), int(skew.Minutes())))
	}
	return nil
}

// verify recomputes the signature with secret over the request as received.
func (s *sigRequest) verify(r *http.Request, body []byte, secret string) bool {
	canonical := canonicalRequest(r, body, s)
	sum := sha256.Sum256([]byte(canonical))
	scope := strings.Join([]string{s.date, s.region, s.service, "aws4_request"}, "/")
	toSign := sigAlgorithm + "\n" + s.amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+secret), s.date)
	key = hmacSHA256(key, s.region)
	key = hmacSHA256(key, s.service)
	key = hmacSHA256(key, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	return hmac.Equal([]byte(want), []byte(strings.ToLower(s.signature)))
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func canonicalRequest(r *http.Request, body []byte, s *sigRequest) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(canonicalURI(r.URL) + "\n")
	b.WriteString(canonicalQuery(r.URL.RawQuery, s.presigned) + "\n")
	for _, h := range s.signedHeaders {
		b.WriteString(h + ":" + canonicalHeaderValue(r, h) + "\n")
	}
	b.WriteString("\n")
	b.WriteString(strings.Join(s.signedHeaders, ";") + "\n")
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	b.WriteString(payload)
	return b.String()
}

// canonicalURI escapes the already-escaped path once more, as SigV4 does for
// every service but S3.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		segs[i] = uriEncode(seg)
	}
	return strings.Join(segs, "/")
}

func canonicalQuery(raw string, presigned bool) string {
	type kv struct{ k, v string }
	var pairs []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		pairs = append(pairs, kv{uriEncode(k), uriEncode(v)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

func canonicalHeaderValue(r *http.Request, name string) string {
	var vals []string
	switch name {
	case "host":
		vals = []string{r.Host}
	case "content-length":
		vals = r.Header.Values(name)
		if len(vals) == 0 && r.ContentLength >= 0 {
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	default:
		vals = r.Header.Values(name)
	}
	for i, v := range vals {
		vals[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(vals, ",")
}

// uriEncode is RFC 3986 percent-encoding of everything but unreserved characters.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// authenticate verifies the request's SigV4 signature. It returns the
// caller, and the issued session when the caller used credentials from the double.
func (d *Double) authenticate(r *http.Request, body []byte) (principal, *session, *apiError) {
	sig, e := parseSignature(r)
	if e != nil {
		return principal{}, nil, e
	}
	if sig == nil {
		return principal{}, nil, errMissingAuth
	}
	now := d.now()
	var secret, arn string
	var sess *session
	if k, ok := d.keys[sig.accessKeyID]; ok {
		if k.SessionToken != "" && sig.securityToken != k.SessionToken {
			return principal{}, nil, errInvalidKey
		}
		secret, arn = k.SecretAccessKey, k.ARN
	} else {
		d.mu.Lock()
		s, ok := d.sessions[sig.accessKeyID]
		var cp session
		if ok {
			cp = *s
		}
		d.mu.Unlock()
		if !ok || sig.securityToken != cp.token {
			return principal{}, nil, errInvalidKey
		}
		if !now.Before(cp.Expiration) {
			return principal{}, nil, errExpiredKey
		}
		sess = &cp
		secret, arn = cp.secret, cp.AssumedRoleARN
	}
	if e := sig.checkScope(now, d.cfg.Regions, d.skew); e != nil {
		return principal{}, nil, e
	}
	if !sig.verify(r, body, secret) {
		return principal{}, nil, errBadSig
	}
	p, err := parsePrincipal(arn)
	if err != nil {
		return principal{}, nil, errInvalidKey
	}
	return p, sess, nil
}
