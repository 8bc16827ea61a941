package stsdouble

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
)

func validationFailed(value, member, constraint string) *apiError {
	return errValidation(fmt.Sprintf("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, member, constraint))
}

func nullMember(member string) *apiError {
	return errValidation(fmt.Sprintf("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member))
}

// commonParams validates RoleArn, RoleSessionName and DurationSeconds as STS does.
func commonParams(p url.Values) (roleARN, sessionName string, duration int, e *apiError) {
	roleARN = p.Get("RoleArn")
	sessionName = p.Get("RoleSessionName")
	switch {
	case !p.Has("RoleArn"):
		return "", "", 0, nullMember("roleArn")
	case len(roleARN) < 20:
		return "", "", 0, validationFailed(roleARN, "roleArn", "Member must have length greater than or equal to 20")
	case len(roleARN) > 2048:
		return "", "", 0, validationFailed(roleARN, "roleArn", "Member must have length less than or equal to 2048")
	case !p.Has("RoleSessionName"):
		return "", "", 0, nullMember("roleSessionName")
	case utf8.RuneCountInString(sessionName) < 2:
		return "", "", 0, validationFailed(sessionName, "roleSessionName", "Member must have length greater than or equal to 2")
	case utf8.RuneCountInString(sessionName) > 64:
		return "", "", 0, validationFailed(sessionName, "roleSessionName", "Member must have length less than or equal to 64")
	case !sessionNameRE.MatchString(sessionName):
		return "", "", 0, validationFailed(sessionName, "roleSessionName", `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}
	if !roleARNRE.MatchString(roleARN) {
		return "", "", 0, errValidation(roleARN + " is invalid")
	}
	duration = 3600
	if p.Has("DurationSeconds") {
		v := p.Get("DurationSeconds")
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return "", "", 0, senderErr(http.StatusBadRequest, "MalformedInput", fmt.Sprintf("DurationSeconds %q is not an integer", v))
		case n < 900:
			return "", "", 0, validationFailed(v, "durationSeconds", "Member must have value greater than or equal to 900")
		case n > 43200:
			return "", "", 0, validationFailed(v, "durationSeconds", "Member must have value less than or equal to 43200")
		}
		duration = n
	}
	return roleARN, sessionName, duration, nil
}

func (d *Double) assumeRole(p url.Values, caller principal, reqID string) ([]byte, *apiError) {
	roleARN, sessionName, duration, e := commonParams(p)
	if e != nil {
		return nil, e
	}
	if p.Has("ExternalId") {
		x := p.Get("ExternalId")
		if len(x) < 2 || len(x) > 1224 {
			return nil, validationFailed(x, "externalId", "Member must have length between 2 and 1224")
		}
		if !externalIDRE.MatchString(x) {
			return nil, validationFailed(x, "externalId", `Member must satisfy regular expression pattern: [\w+=,.@:\/-]*`)
		}
	}
	tags, transitive, e := parseTags(p)
	if e != nil {
		return nil, e
	}
	callerARN := caller.arn()
	denied := errAccessDenied(fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", callerARN, roleARN))
	role, ok := d.roles[roleARN]
	if !ok {
		return nil, denied // real STS does not say whether the role exists
	}
	trusted := false
	for _, t := range role.TrustedPrincipals {
		trusted = trusted || trusts(t, caller)
	}
	if !trusted || (role.ExternalID != "" && p.Get("ExternalId") != role.ExternalID) {
		return nil, denied
	}
	if len(tags) > 0 && !role.TagSession {
		return nil, errAccessDenied(fmt.Sprintf("User: %s is not authorized to perform: sts:TagSession on resource: %s", callerARN, roleARN))
	}
	if duration > role.maxSession() {
		return nil, errValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	if caller.kind == "assumed-role" && duration > 3600 {
		return nil, errValidation("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}
	s := d.issue(role, sessionName, duration, "AssumeRole", callerARN, tags, transitive)
	var out assumeRoleResponse
	out.Xmlns = Namespace
	out.Result.Credentials = s.xml()
	out.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: s.roleID + ":" + sessionName, Arn: s.AssumedRoleARN}
	out.Result.PackedPolicySize = packedPolicySize(p)
	out.Result.SourceIdentity = p.Get("SourceIdentity")
	out.ResponseMetadata.RequestID = reqID
	d.count(roleARN, func(c *RoleCalls) { c.AssumeRole++ })
	return mustXML(out), nil
}

// packedPolicySize is present only when session policies or tags were passed,
// as in STS: a rough percentage of the packed limit.
func packedPolicySize(p url.Values) *int {
	n := len(p.Get("Policy"))
	present := p.Has("Policy")
	for k, v := range p {
		if strings.HasPrefix(k, "PolicyArns.") || strings.HasPrefix(k, "Tags.") {
			present = true
			for _, s := range v {
				n += len(s)
			}
		}
	}
	if !present {
		return nil
	}
	pct := n * 100 / 2048
	if pct < 1 {
		pct = 1
	}
	return &pct
}

func (d *Double) assumeRoleWithWebIdentity(ctx context.Context, p url.Values, reqID string) ([]byte, *apiError) {
	roleARN, sessionName, duration, e := commonParams(p)
	if e != nil {
		return nil, e
	}
	tok := p.Get("WebIdentityToken")
	switch {
	case !p.Has("WebIdentityToken"):
		return nil, nullMember("webIdentityToken")
	case len(tok) < 4:
		return nil, validationFailed("***", "webIdentityToken", "Member must have length greater than or equal to 4")
	case len(tok) > 20000:
		return nil, validationFailed("***", "webIdentityToken", "Member must have length less than or equal to 20000")
	}
	hdr, claims, signed, sig, err := splitJWT(tok)
	if err != nil {
		return nil, errInvalidIdentityToken("The web identity token is not a valid JWT: " + err.Error())
	}
	ks, ok := d.idps[claims.Issuer]
	if !ok {
		return nil, errInvalidIdentityToken(fmt.Sprintf("No OpenIDConnect provider found in your account for %s", claims.Issuer))
	}
	if hdr.Alg != "RS256" && hdr.Alg != "ES256" {
		return nil, errInvalidIdentityToken(fmt.Sprintf("Unsupported token signing algorithm %q: use RS256 or ES256", hdr.Alg))
	}
	key, err := ks.key(ctx, hdr.Kid)
	var fe fetchError
	switch {
	case errors.As(err, &fe):
		d.log.Warn("JWKS fetch failed", "issuer", claims.Issuer, "error", err.Error())
		return nil, senderErr(http.StatusBadRequest, "IDPCommunicationError", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements")
	case err != nil:
		return nil, errInvalidIdentityToken("Couldn't find a matching key in the JWKS of your identity provider for the token's key id")
	}
	if err := verifyJWS(hdr.Alg, key, signed, sig); err != nil {
		return nil, errInvalidIdentityToken("The signature of the web identity token could not be verified")
	}
	now := d.now()
	if claims.ExpiresAt == nil {
		return nil, errInvalidIdentityToken("The web identity token has no exp claim")
	}
	if now.Unix() >= *claims.ExpiresAt {
		return nil, senderErr(http.StatusBadRequest, "ExpiredTokenException", fmt.Sprintf("Token expired: current date/time %d must be before the expiration date/time%d", now.Unix(), *claims.ExpiresAt))
	}
	if claims.NotBefore != nil && now.Unix() < *claims.NotBefore {
		return nil, errInvalidIdentityToken("The web identity token is not yet valid (nbf is in the future)")
	}
	clientIDs := ks.provider.ClientIDs
	if len(clientIDs) == 0 {
		clientIDs = []string{"sts.amazonaws.com"}
	}
	aud := ""
	for _, a := range claims.Audience {
		for _, c := range clientIDs {
			if a == c && aud == "" {
				aud = a
			}
		}
	}
	if aud == "" {
		return nil, errInvalidIdentityToken("Incorrect token audience")
	}
	denied := errAccessDenied("Not authorized to perform sts:AssumeRoleWithWebIdentity")
	role, ok := d.roles[roleARN]
	if !ok {
		return nil, denied
	}
	trusted := false
	for _, t := range role.WebIdentity {
		want := t.Audience
		if want == "" {
			want = "sts.amazonaws.com"
		}
		if t.Issuer == claims.Issuer && want == aud && globMatch(t.Subject, claims.Subject) {
			trusted = true
		}
	}
	if !trusted {
		return nil, denied
	}
	if duration > role.maxSession() {
		return nil, errValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	s := d.issue(role, sessionName, duration, "AssumeRoleWithWebIdentity", claims.Subject, nil, nil)
	var out assumeRoleWithWebIdentityResponse
	out.Xmlns = Namespace
	out.Result.Credentials = s.xml()
	out.Result.SubjectFromWebIdentityToken = claims.Subject
	out.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: s.roleID + ":" + sessionName, Arn: s.AssumedRoleARN}
	out.Result.PackedPolicySize = packedPolicySize(p)
	out.Result.Provider = "arn:aws:iam::" + d.cfg.Account + ":oidc-provider/" + strings.TrimPrefix(claims.Issuer, "https://")
	out.Result.Audience = aud
	out.ResponseMetadata.RequestID = reqID
	d.count(roleARN, func(c *RoleCalls) { c.AssumeRoleWithWebIdentity++ })
	return mustXML(out), nil
}

func (d *Double) getCallerIdentity(caller principal, sess *session, reqID string) ([]byte, string) {
	var out getCallerIdentityResponse
	out.Xmlns = Namespace
	out.Result.Arn = caller.arn()
	out.Result.Account = caller.account
	role := ""
	switch {
	case sess != nil:
		out.Result.UserID = sess.roleID + ":" + sess.SessionName
		role = sess.RoleARN
		d.count(role, func(c *RoleCalls) { c.GetCallerIdentity++ })
	case caller.kind == "assumed-role":
		out.Result.UserID = uniqueID("AROA", "arn:aws:iam::"+caller.account+":role/"+caller.name) + ":" + caller.session
	case caller.kind == "root":
		out.Result.UserID = caller.account
	default:
		out.Result.UserID = uniqueID("AIDA", caller.arn())
	}
	out.ResponseMetadata.RequestID = reqID
	return mustXML(out), role
}

func (d *Double) count(role string, f func(*RoleCalls)) {
	d.mu.Lock()
	c := d.stats.Roles[role]
	f(&c)
	d.stats.Roles[role] = c
	d.mu.Unlock()
}
