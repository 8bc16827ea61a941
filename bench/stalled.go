package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StalledUploads holds HTTPS connections open to a webhook, each a POST
// /mutate over HTTP/1.1 whose headers announce a 3 MB body, that sends the
// body's first 4 KiB and stalls: a client that makes a server without read
// timeouts (or one that sizes its buffer from Content-Length) hold it.
// A connection the server ends is opened again, so that n stay open.
type StalledUploads struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// Ended counts the uploads the server ended (each then opened again).
	Ended atomic.Int64
}

// HoldStalledUploads opens n stalled uploads to addr and returns once the
// server's handler is reading each one's body (it sent 100 Continue).
func HoldStalledUploads(addr string, roots *x509.CertPool, n int) (*StalledUploads, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &StalledUploads{cancel: cancel}
	ready := make(chan error, n)
	for range n {
		s.wg.Go(func() {
			first := true
			for ctx.Err() == nil {
				c, _, err := OpenStalledUpload(ctx, addr, roots, 10*time.Second)
				if first {
					ready <- err
					first = false
				}
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				// Blocks until the server ends the upload or Close.
				stop := context.AfterFunc(ctx, func() { c.Close() })
				io.Copy(io.Discard, c)
				stop()
				c.Close()
				if ctx.Err() == nil {
					s.Ended.Add(1)
				}
			}
		})
	}
	for range n {
		if err := <-ready; err != nil {
			s.Close()
			return nil, fmt.Errorf("open a stalled upload: %w", err)
		}
	}
	return s, nil
}

// Close ends every upload and waits for them.
func (s *StalledUploads) Close() {
	s.cancel()
	s.wg.Wait()
}

// OpenStalledUpload opens one stalled upload to the webhook at addr: an
// HTTP/1.1 POST /mutate announcing a 3 MB body with Expect: 100-continue,
// then, once the server answers 100 Continue (its handler is reading the
// body), the body's first 4 KiB. It returns the connection, left stalled,
// and the reader that holds what the server sends next. timeout bounds the
// dial and everything up to the return.
func OpenStalledUpload(ctx context.Context, addr string, roots *x509.CertPool, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout},
		Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	_, err = io.WriteString(c, "POST /mutate HTTP/1.1\r\nHost: podrole-webhook\r\nContent-Type: application/json\r\n"+
		"Content-Length: 3000000\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	var status string
	if err == nil {
		status, err = br.ReadString('\n')
	}
	if err == nil && !strings.HasPrefix(status, "HTTP/1.1 100 ") {
		err = fmt.Errorf("got %q, want 100 Continue", status)
	}
	if err == nil {
		_, err = br.ReadString('\n') // the empty line ending the interim response
	}
	if err == nil {
		_, err = io.WriteString(c, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"stalled","object":{"metadata":{"annotations":{"x":"`+
			strings.Repeat("a", 4<<10))
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	return c, br, nil
}
