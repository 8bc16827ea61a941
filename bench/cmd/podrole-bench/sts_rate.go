package main

import (
	"fmt"
	"time"

	"github.com/podrole/podrole/sidecar/creds"
)

// stsCallsPerHour derives one pod's steady-state STS call rate from the
// sidecar's own refresh policy for a one-hour session: one AssumeRole per
// refresh, a refresh every (lifetime - refresh-before - jitter/2) on average.
func stsCallsPerHour(options) string {
	const lifetime = time.Hour
	p := creds.DefaultPolicy()
	before := min(p.RefreshBefore, lifetime*3/4)
	jitter := min(p.RefreshJitter, lifetime/12)
	lo, hi := lifetime-before-jitter, lifetime-before
	avg := (lo + hi) / 2
	return fmt.Sprintf("%.1f (a refresh every %s-%s, served expiry always >= %s ahead)",
		float64(time.Hour)/float64(avg), lo, hi, p.MinRemaining)
}
