// Package stsdouble is a faithful in-memory AWS STS for tests, the e2e cluster,
// the demo and benchmarks. It speaks the STS Query API (version 2011-06-15,
// POST form or GET query) on "/": AssumeRole, AssumeRoleWithWebIdentity and
// GetCallerIdentity, with STS's XML documents, error codes and HTTP statuses.
//
// What it checks, like STS:
//   - SigV4 (Authorization header or presigned query) on AssumeRole and
//     GetCallerIdentity: scope (service sts, region, date), clock skew
//     (15 min), signed headers and payload, session tokens — against the
//     configured long-term keys and every credential the double issued
//     (expired ones answer ExpiredToken).
//   - Trust: who may AssumeRole each role (assumed-role callers match their
//     role), ExternalId, role chaining limited to 1 h, DurationSeconds
//     900..MaxSessionDuration, RoleSessionName [\w+=,.@-]{2,64}.
//   - Session tags on AssumeRole: the wire format and STS's limits, and
//     sts:TagSession in the role's trust (Role.TagSession); the tags of
//     each issued session are recorded (Issued.Tags).
//   - Web identity: RS256/ES256 JWTs verified against a JWKS file or URL
//     (kube-apiserver /openid/v1/jwks with a CA file and bearer token),
//     exp/nbf/iss/aud, subject patterns in the role's trust.
//
// Test knobs: counters per role, issued credentials (no secrets), latency,
// outage (503 or closed connections), a lifetime cap and forced expiry, as
// methods and as the admin API that Double.Admin serves under /_double/.
// The config file format is documented in README.md next to this file.
package stsdouble
