// Package creds keeps the pod role's temporary credentials: fetched from a
// Source (STS, see package assume) at start, cached, refreshed in the
// background well before they expire, and never handed out once they are
// too close to expiry. It knows nothing about HTTP or the AWS SDK.
package creds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Credentials are one set of temporary role credentials. String, GoString
// and LogValue redact the secrets so that a stray log line or %v in an error
// cannot leak them.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
	// LastUpdated is when the sidecar obtained these credentials.
	LastUpdated time.Time
	// AccountID is the role's account (served on the -extended path only).
	AccountID string
}

// String shows only non-secret fields.
func (c Credentials) String() string {
	return fmt.Sprintf("credentials{expiration=%s lastUpdated=%s account=%s}",
		c.Expiration.UTC().Format(time.RFC3339), c.LastUpdated.UTC().Format(time.RFC3339), c.AccountID)
}

// GoString keeps %#v from printing secrets.
func (c Credentials) GoString() string { return c.String() }

// LogValue keeps slog (whose JSON handler would marshal the fields) from
// logging secrets.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// complete reports which field a client needs is missing, if any.
func (c Credentials) complete() error {
	switch {
	case c.AccessKeyID == "":
		return errors.New("no access key id")
	case c.SecretAccessKey == "":
		return errors.New("no secret access key")
	case c.SessionToken == "":
		return errors.New("no session token")
	case c.Expiration.IsZero():
		return errors.New("no expiration")
	}
	return nil
}

// Source fetches fresh credentials, e.g. by calling STS.
type Source interface {
	// API names the upstream call for metrics and logs ("AssumeRole").
	API() string
	Fetch(ctx context.Context) (Credentials, error)
}

// Metrics observes upstream calls. A nil Metrics is allowed.
type Metrics interface {
	STSCall(api string, err error)
}

// ErrUnavailable is returned (wrapped) when no credentials that are safe to
// hand out exist and none could be fetched in time.
var ErrUnavailable = errors.New("role credentials are not available")

// Clock is the time source of the cache; tests pass a fake one.
type Clock interface {
	Now() time.Time
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
