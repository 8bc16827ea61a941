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
				c, err := stall(ctx, addr, roots)
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

// stall opens one stalled upload: headers, 100 Continue, 4 KiB of body.
func stall(ctx context.Context, addr string, roots *x509.CertPool) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
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
		_, err = br.ReadString('\n')
	}
	if err == nil {
		_, err = io.WriteString(c, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"stalled","object":{"metadata":{"annotations":{"x":"`+
			strings.Repeat("a", 4<<10))
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
