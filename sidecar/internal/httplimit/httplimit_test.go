package httplimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wait bounds every "eventually" in these tests; nothing asserts a speed.
const wait = 20 * time.Second

type server struct {
	addr string
	l    *Listener
	srv  *http.Server
}

// start serves h with lim on loopback. /healthz answers ok.
func start(t *testing.T, lim Limits, h http.Handler) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	if h != nil {
		mux.Handle("/", h)
	}
	srv, l := lim.Server(ln, mux, nil)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	s := &server{addr: ln.Addr().String(), srv: srv}
	s.l, _ = l.(*Listener)
	return s
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reads until the server ends the connection (EOF or reset)
// and returns what it sent before; it fails if that takes longer than wait.
func closedByServer(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", wait)
	}
	return string(b)
}

// stillOpen reports whether the server has not closed c: a short read times
// out instead of returning EOF.
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	c.SetReadDeadline(time.Time{})
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func healthz(t *testing.T, addr string) {
	t.Helper()
	client := &http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, b)
	}
}

func short() Limits {
	return Limits{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 400 * time.Millisecond,
		WriteTimeout: time.Second, IdleTimeout: 200 * time.Millisecond, MaxHeaderBytes: 8 << 10, MaxConns: 64}
}

// The server ends connections that send nothing, trickle a request, or sit
// idle after one: none can be held open past the timeouts.
func TestTimeoutsCloseConnections(t *testing.T) {
	s := start(t, short(), nil)
	idle := dial(t, s.addr)
	slow := dial(t, s.addr)
	kept := dial(t, s.addr)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 50 ms, never the end of the headers
		slow.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n"))
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := slow.Write([]byte("X")); err != nil {
					return
				}
			}
		}
	}()
	kept.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(kept), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("keep-alive request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	for name, c := range map[string]net.Conn{"idle": idle, "slowloris": slow, "idle keep-alive": kept} {
		closedByServer(t, c)
		t.Logf("%s: closed by the server", name)
	}
	healthz(t, s.addr)
}

// Headers past MaxHeaderBytes get 431 and the connection is closed, with
// no more than that read into memory.
func TestMaxHeaderBytes(t *testing.T) {
	s := start(t, Health(), nil)
	c := dial(t, s.addr)
	go c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"))
	if got := closedByServer(t, c); !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Fatalf("64 KiB of headers: %q", got)
	}
	c = dial(t, s.addr)
	c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: " + strings.Repeat("a", 6<<10) + "\r\nConnection: close\r\n\r\n"))
	if got := closedByServer(t, c); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Fatalf("6 KiB of headers: %q", got)
	}
}

// At MaxConns, a new connection sheds the one that has waited longest for
// a request, so a probe is answered at once however many idle or slowloris
// connections others hold; the count never passes the limit.
func TestShedsLongestWaiting(t *testing.T) {
	lim := Health()
	lim.MaxConns = 4
	lim.ReadHeaderTimeout, lim.IdleTimeout = time.Hour, time.Hour // only shedding can free a slot here
	s := start(t, lim, nil)
	var held []net.Conn
	for i := range 4 {
		c := dial(t, s.addr)
		if i%2 == 1 {
			c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")) // slowloris
		}
		held = append(held, c)
		waitOpen(t, s.l, i+1)
	}
	healthz(t, s.addr)
	closedByServer(t, held[0])
	for i, c := range held[1:] {
		if !stillOpen(c) {
			t.Errorf("connection %d was shed; only the oldest should be", i+1)
		}
	}
	// Many more: each new one sheds an old one, and the probe still gets in.
	for range 200 {
		dial(t, s.addr).Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	}
	healthz(t, s.addr)
	if n := s.l.Open(); n > lim.MaxConns {
		t.Fatalf("%d connections open, limit %d", n, lim.MaxConns)
	}
}

func waitOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	for end := time.Now().Add(wait); l.Open() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d connections open, want %d", l.Open(), n)
		}
	}
}

// When every slot runs a handler, nothing is shed: the next connection
// waits for a handler to finish, and never more than MaxConns run.
func TestWaitsWhenAllActive(t *testing.T) {
	release := make(chan struct{})
	var running, most atomic.Int32
	lim := Health()
	lim.MaxConns = 2
	s := start(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		io.WriteString(w, "done")
	}))
	client := &http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + s.addr + "/block")
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	for end := time.Now().Add(wait); running.Load() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the two blocking requests did not start")
		}
	}
	probed := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + s.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		probed <- err
	}()
	select {
	case err := <-probed:
		t.Fatalf("answered while both slots ran handlers (err %v): a running request was shed or the limit passed", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if err := <-probed; err != nil {
		t.Fatalf("/healthz after the handlers finished: %v", err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a running request failed: %v", err)
		}
	}
	if m := most.Load(); m > 2 {
		t.Fatalf("%d handlers ran at once, limit 2", m)
	}
}

// Closing the server ends an Accept that waits for a slot.
func TestCloseWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := Health()
	lim.MaxConns = 1
	var running atomic.Int32
	srv, l := lim.Server(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { running.Add(1); <-release }), nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	go http.Get("http://" + ln.Addr().String() + "/block")
	for end := time.Now().Add(wait); running.Load() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the blocking request did not start")
		}
	}
	dial(t, ln.Addr().String()) // accepted, then waits for the slot
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return after the listener closed")
	}
}
