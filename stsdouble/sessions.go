package stsdouble

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// issue mints and records temporary credentials for role, with the session
// tags they were asked with.
func (d *Double) issue(role Role, sessionName string, duration int, action, caller string, tags []Tag, transitive []string) *session {
	now := d.now().UTC().Truncate(time.Second)
	name := role.ARN[strings.LastIndex(role.ARN, "/")+1:]
	d.mu.Lock()
	defer d.mu.Unlock()
	life := time.Duration(duration) * time.Second
	if d.lifetime > 0 && d.lifetime < life {
		life = d.lifetime
	}
	s := &session{
		Issued: Issued{
			AccessKeyID:    "ASIA" + randomString(16),
			RoleARN:        role.ARN,
			AssumedRoleARN: "arn:aws:sts::" + d.cfg.Account + ":assumed-role/" + name + "/" + sessionName,
			SessionName:    sessionName,
			Action:         action,
			Caller:         caller,
			IssuedAt:       now,
			Expiration:     now.Add(life),
			Tags:           tags, TransitiveTagKeys: transitive,
		},
		secret: randomBase64(30),
		token:  "IQoJb3JpZ2luX2VjE" + randomBase64(270),
		roleID: uniqueID("AROA", role.ARN),
	}
	d.sessions[s.AccessKeyID] = s
	d.order = append(d.order, s.AccessKeyID)
	d.pruneLocked(now)
	return s
}

// maxSessions bounds memory in long benchmarks and demos: past it, sessions
// expired for an hour are forgotten (their keys then get InvalidClientTokenId).
const maxSessions = 10000

func (d *Double) pruneLocked(now time.Time) {
	if len(d.order) <= maxSessions {
		return
	}
	kept := d.order[:0]
	for _, id := range d.order {
		if s := d.sessions[id]; now.Sub(s.Expiration) > time.Hour {
			delete(d.sessions, id)
			continue
		}
		kept = append(kept, id)
	}
	d.order = kept
}

func (s *session) xml() credentialsXML {
	return credentialsXML{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.secret, SessionToken: s.token, Expiration: formatExpiration(s.Expiration)}
}

// uniqueID derives a stable IAM unique id (AROA..., AIDA...) from an ARN.
func uniqueID(prefix, arn string) string {
	sum := sha256.Sum256([]byte(arn))
	return prefix + strings.ToUpper(base32.StdEncoding.EncodeToString(sum[:]))[:17]
}

const upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		x, err := rand.Int(rand.Reader, big.NewInt(int64(len(upperAlnum))))
		if err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err))
		}
		b[i] = upperAlnum[x.Int64()]
	}
	return string(b)
}

func randomBase64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return base64.StdEncoding.EncodeToString(b)
}
