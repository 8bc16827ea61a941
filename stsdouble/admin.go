package stsdouble

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// SetOutage switches the simulated outage.
func (d *Double) SetOutage(o Outage) { d.mu.Lock(); d.outage = o; d.mu.Unlock() }

// SetLatency delays every STS answer by l (the admin API is not delayed).
func (d *Double) SetLatency(l time.Duration) { d.mu.Lock(); d.latency = l; d.mu.Unlock() }

// SetMaxLifetime caps the lifetime of credentials issued from now on (0: no
// cap). Real STS never shortens a session; this knob lets rotation tests see
// expiry in minutes instead of the 15-minute STS minimum.
func (d *Double) SetMaxLifetime(l time.Duration) { d.mu.Lock(); d.lifetime = l; d.mu.Unlock() }

// Stats returns a copy of the counters.
func (d *Double) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Stats{Requests: d.stats.Requests, Roles: map[string]RoleCalls{}, Errors: map[string]int{}}
	for k, v := range d.stats.Roles {
		s.Roles[k] = v
	}
	for k, v := range d.stats.Errors {
		s.Errors[k] = v
	}
	return s
}

// Calls returns the counters of one role.
func (d *Double) Calls(roleARN string) RoleCalls {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats.Roles[roleARN]
}

// Issued lists the credentials issued for roleARN (all roles when empty), oldest first.
func (d *Double) Issued(roleARN string) []Issued {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Issued
	for _, id := range d.order {
		s := d.sessions[id]
		if roleARN == "" || s.RoleARN == roleARN {
			out = append(out, s.Issued)
		}
	}
	return out
}

// Reset zeroes the counters; issued credentials stay valid.
func (d *Double) Reset() { d.mu.Lock(); d.resetStatsLocked(); d.mu.Unlock() }

// Expire makes issued credentials with this access key id expired now, as if
// their time had run out.
func (d *Double) Expire(accessKeyID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[accessKeyID]
	if ok {
		s.Expiration = d.now().Add(-time.Second)
	}
	return ok
}

// Admin returns the handler of the test knobs, meant to be mounted at
// /_double/ (STS itself only uses "/"):
//
//	GET  /_double/healthz            200 when serving (for probes)
//	GET  /_double/calls              Stats as JSON
//	GET  /_double/issued[?role=ARN]  issued credentials (no secrets) as JSON
//	POST /_double/outage?on=1[&mode=503|close]   on=0 ends it
//	POST /_double/latency?ms=N
//	POST /_double/lifetime?seconds=N (0: no cap)
//	POST /_double/expire?access_key_id=ID
//	POST /_double/reset              zero the counters
func (d *Double) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_double/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /_double/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.Stats())
	})
	mux.HandleFunc("GET /_double/issued", func(w http.ResponseWriter, r *http.Request) {
		list := d.Issued(r.URL.Query().Get("role"))
		if list == nil {
			list = []Issued{}
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("POST /_double/outage", func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "outage: give on=1 or on=0 (and optionally mode=503 or mode=close)", http.StatusBadRequest)
			return
		}
		mode := OutageNone
		if on {
			switch r.URL.Query().Get("mode") {
			case "", "503":
				mode = Outage503
			case "close":
				mode = OutageClose
			default:
				http.Error(w, "outage: mode must be 503 or close", http.StatusBadRequest)
				return
			}
		}
		d.SetOutage(mode)
		writeJSON(w, map[string]any{"outage": on, "mode": r.URL.Query().Get("mode")})
	})
	mux.HandleFunc("POST /_double/latency", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "latency: give ms=N (milliseconds, >= 0)", http.StatusBadRequest)
			return
		}
		d.SetLatency(time.Duration(ms) * time.Millisecond)
		writeJSON(w, map[string]int{"latency_ms": ms})
	})
	mux.HandleFunc("POST /_double/lifetime", func(w http.ResponseWriter, r *http.Request) {
		s, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || s < 0 {
			http.Error(w, "lifetime: give seconds=N (>= 0, 0 removes the cap)", http.StatusBadRequest)
			return
		}
		d.SetMaxLifetime(time.Duration(s) * time.Second)
		writeJSON(w, map[string]int{"max_lifetime_seconds": s})
	})
	mux.HandleFunc("POST /_double/expire", func(w http.ResponseWriter, r *http.Request) {
		if !d.Expire(r.URL.Query().Get("access_key_id")) {
			http.Error(w, "expire: no issued credentials with that access_key_id", http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]bool{"expired": true})
	})
	mux.HandleFunc("POST /_double/reset", func(w http.ResponseWriter, r *http.Request) {
		d.Reset()
		writeJSON(w, map[string]bool{"reset": true})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}
