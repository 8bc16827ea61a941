package stsdouble

import (
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// maxBody bounds request bodies (web identity tokens are at most 20000 characters).
const maxBody = 1 << 20

// ServeHTTP answers the STS Query API.
func (d *Double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	d.mu.Lock()
	outage, latency := d.outage, d.latency
	d.stats.Requests++
	d.mu.Unlock()

	// Read the body first so that a client that gives up during the
	// injected latency cancels r.Context().
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch outage {
	case OutageClose:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				d.log.Info("sts call dropped (outage)", "request_id", reqID)
				return
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or no hijack: abort the stream
	case Outage503:
		d.writeError(w, reqID, "", "", errUnavailable)
		return
	}

	action, role, body, e := d.handle(r, raw, readErr, reqID)
	if e != nil {
		d.writeError(w, reqID, action, role, e)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	d.log.Info("sts call", "request_id", reqID, "action", action, "role", role, "status", http.StatusOK)
}

func (d *Double) writeError(w http.ResponseWriter, reqID, action, role string, e *apiError) {
	d.mu.Lock()
	d.stats.Errors[e.code]++
	if role != "" {
		c := d.stats.Roles[role]
		c.Denied++
		d.stats.Roles[role] = c
	}
	d.mu.Unlock()
	b, _ := xml.Marshal(errorResponse{Xmlns: Namespace, Error: errorBody{Type: e.fault, Code: e.code, Message: e.message}, RequestID: reqID})
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	w.Write(b)
	// Messages never hold secrets: they name ARNs, dates and parameters only.
	d.log.Info("sts call failed", "request_id", reqID, "action", action, "role", role, "status", e.status, "code", e.code, "message", e.message)
}

// handle parses and dispatches one call; role is the role the call was about
// (for counters), body the XML answer.
func (d *Double) handle(r *http.Request, raw []byte, readErr error, reqID string) (action, role string, body []byte, e *apiError) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return "", "", nil, senderErr(http.StatusMethodNotAllowed, "InvalidAction", "Only GET and POST are supported by the STS Query API.")
	}
	if readErr != nil {
		return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "could not read the request body")
	}
	if len(raw) > maxBody {
		return "", "", nil, senderErr(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body is too large")
	}
	params, perr := url.ParseQuery(r.URL.RawQuery)
	if perr != nil {
		return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "The query string is malformed.")
	}
	if r.Method == http.MethodPost && len(raw) > 0 {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "application/x-www-form-urlencoded" {
			return "", "", nil, senderErr(http.StatusBadRequest, "InvalidAction", "POST bodies must be application/x-www-form-urlencoded")
		}
		form, err := url.ParseQuery(string(raw))
		if err != nil {
			return "", "", nil, senderErr(http.StatusBadRequest, "MalformedQueryString", "The request body is not a valid form.")
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	action = params.Get("Action")
	if v := params.Get("Version"); v != "" && v != APIVersion {
		return action, "", nil, senderErr(http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, v))
	}
	switch action {
	case "AssumeRole":
		caller, _, e := d.authenticate(r, raw)
		role = params.Get("RoleArn")
		if e != nil {
			return action, d.knownRole(role), nil, e
		}
		body, e = d.assumeRole(params, caller, reqID)
		return action, d.knownRole(role), body, e
	case "AssumeRoleWithWebIdentity":
		role = params.Get("RoleArn")
		body, e = d.assumeRoleWithWebIdentity(r.Context(), params, reqID)
		return action, d.knownRole(role), body, e
	case "GetCallerIdentity":
		caller, cs, e := d.authenticate(r, raw)
		if e != nil {
			return action, "", nil, e
		}
		body, role = d.getCallerIdentity(caller, cs, reqID)
		return action, role, body, nil
	case "":
		return action, "", nil, senderErr(http.StatusBadRequest, "MissingAction", "Missing Action")
	}
	return action, "", nil, senderErr(http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, APIVersion))
}

// knownRole returns arn if it names a configured role (so counters cannot be
// grown without bound by arbitrary input), else "".
func (d *Double) knownRole(arn string) string {
	if _, ok := d.roles[arn]; ok {
		return arn
	}
	return ""
}

// Handler serves STS on "/" and the admin API under /_double/.
func (d *Double) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/_double/", d.Admin())
	mux.Handle("/", d)
	return mux
}

func newRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func mustXML(v any) []byte {
	b, err := xml.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal STS response: %v", err)) // fixed struct types: cannot fail
	}
	return b
}
