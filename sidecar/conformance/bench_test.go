package conformance

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkClientSequence measures the Go SDK's IMDSv2 sequence against the
// binary over loopback with keep-alive: PUT token, GET listing, GET credentials.
func BenchmarkClientSequence(b *testing.B) {
	st := startSTS(b)
	sc := startSidecar(b, st, sidecarOpts{nodeURL: startNodeIMDS(b).URL})
	client := &http.Client{}
	do := func(req *http.Request) string {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s %s: %d", req.Method, req.URL.Path, resp.StatusCode)
		}
		return string(body)
	}
	b.ResetTimer()
	for b.Loop() {
		tok := do(mustReq(http.MethodPut, sc.URL+pathToken, map[string]string{hdrTokenTTL: "300"}))
		role := do(mustReq(http.MethodGet, sc.URL+pathCreds, withToken(tok)))
		do(mustReq(http.MethodGet, sc.URL+pathCreds+role, withToken(tok)))
	}
}
