// Command trivial-webhook serves bench.TrivialWebhook over HTTPS (HTTP/1.1
// and HTTP/2): the reference beside podrole-webhook in section 5 of `make
// bench`. It is a binary of its own so that its CPU time and RSS are a
// webhook's, not a test binary's.
//
//	trivial-webhook --listen=127.0.0.1:9443 --cert=tls.crt --key=tls.key
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/podrole/podrole/bench"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9443", "host:port to serve HTTPS on (loopback)")
	cert := flag.String("cert", "", "PEM certificate file")
	key := flag.String("key", "", "PEM private key file")
	flag.Parse()
	if *cert == "" || *key == "" {
		fmt.Fprintln(os.Stderr, "trivial-webhook: --cert and --key are required")
		os.Exit(2)
	}
	srv := &http.Server{Addr: *listen, Handler: bench.TrivialWebhook(), ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServeTLS(*cert, *key); err != nil {
		fmt.Fprintf(os.Stderr, "trivial-webhook: serve on %s: %v\n", *listen, err)
		os.Exit(1)
	}
}
