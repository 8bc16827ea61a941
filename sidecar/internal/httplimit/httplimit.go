// Package httplimit bounds what one HTTP listener of the agent can cost: how
// long a client may take to send its request and read the answer, how long
// an idle keep-alive connection lives, how large the request headers may be,
// and how many connections are open at once. The agent runs under a 64 Mi
// memory limit, and its health port is reachable from other pods.
package httplimit

import (
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits of one listener.
type Limits struct {
	ReadHeaderTimeout time.Duration // from the connection (or its last request) to the end of the request headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // from the end of the request headers to the end of the answer
	IdleTimeout       time.Duration // a keep-alive connection between requests
	MaxHeaderBytes    int           // request line and headers; beyond: 431 and close
	MaxConns          int           // open connections; see Listener
}

// Health is for /healthz, /readyz, /started and /metrics: the kubelet's
// probes (a new connection each, request sent at once) and a Prometheus
// scrape (one keep-alive connection) need a handful of connections, small
// headers and answers within a second.
func Health() Limits {
	return Limits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       90 * time.Second, // past a 60 s scrape interval
		MaxHeaderBytes:    8 << 10,
		MaxConns:          64,
	}
}

// IMDS is for the metadata emulator on loopback, used only by the pod's own
// containers: keep-alive connections for as long as the SDKs keep them,
// room for an app with a thousand clients, and headers far larger than any
// SDK sends (user agent and a 56-byte token) but not the 1 MiB net/http
// allows by default. The timeouts are long enough never to cut an answer
// short: a credentials request waits at most creds.Policy.MaxWait (250 ms).
// An idle keep-alive connection costs the agent about 20 KiB, so 1024 of
// them (plus their headers) stay well inside the 64 Mi limit; an app leaking
// connections gets its oldest idle ones closed instead of the agent
// OOM-killed.
func IMDS() Limits {
	return Limits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    8 << 10,
		MaxConns:          1024,
	}
}

// Server returns a server for h with these limits and ln wrapped to hold at
// most MaxConns connections; serve with srv.Serve(l). errLog may be nil.
func (lim Limits) Server(ln net.Listener, h http.Handler, errLog *log.Logger) (*http.Server, net.Listener) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          errLog,
		// "OPTIONS *" would otherwise be answered 200 by net/http itself.
		DisableGeneralOptionsHandler: true,
	}
	if lim.MaxConns <= 0 {
		return srv, ln
	}
	l := NewListener(ln, lim.MaxConns)
	srv.ConnState = l.ConnState
	return srv, l
}

// Listener holds at most max connections open. When a new connection comes
// and max are open, it closes the one that has waited longest for a request
// (a connection that sent nothing yet, a partial request, or an idle
// keep-alive one); only when all max are running a handler does it wait for
// one of them to finish before it hands the new connection on.
//
// Why not golang.org/x/net/netutil.LimitListener: it stops accepting at the
// limit, so whoever holds the slots (say, another pod with max idle or
// slowloris connections to the health port) makes the kubelet's probe wait
// in the kernel's queue until their timeouts expire, past the probe's 1 s
// timeout; the kubelet then restarts a healthy agent. Shedding the
// longest-waiting idle connection instead answers the probe at once, and
// keeps memory bounded all the same. (Someone opening connections faster
// than a probe sends its request can still crowd it out: keep the port from
// other pods with a NetworkPolicy if that matters.)
//
// The http.Server serving it must have ConnState set to l.ConnState (Server
// does that): only the server knows whether a connection is running a
// handler.
type Listener struct {
	net.Listener
	max int

	mu     sync.Mutex
	cond   *sync.Cond
	open   map[*conn]struct{}
	seq    uint64 // orders connections by when they last started to wait
	closed bool
}

// NewListener wraps ln; max must be at least 1.
func NewListener(ln net.Listener, max int) *Listener {
	l := &Listener{Listener: ln, max: max, open: map[*conn]struct{}{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

type conn struct {
	net.Conn
	l       *Listener
	active  bool   // running a handler: not to be shed
	waiting uint64 // when it last started waiting for a request (Listener.seq)
	once    sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.remove(c) })
	return err
}

// Accept waits for a connection, then makes room for it.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	var shed []*conn
	l.mu.Lock()
	for len(l.open) >= l.max && !l.closed {
		if victim := l.longestWaitingLocked(); victim != nil {
			delete(l.open, victim)
			shed = append(shed, victim)
			continue
		}
		l.cond.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		nc.Close()
		closeAll(shed)
		return nil, net.ErrClosed
	}
	l.seq++
	c := &conn{Conn: nc, l: l, waiting: l.seq}
	l.open[c] = struct{}{}
	l.mu.Unlock()
	closeAll(shed)
	return c, nil
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		c.Close()
	}
}

func (l *Listener) longestWaitingLocked() *conn {
	var victim *conn
	for c := range l.open {
		if !c.active && (victim == nil || c.waiting < victim.waiting) {
			victim = c
		}
	}
	return victim
}

func (l *Listener) remove(c *conn) {
	l.mu.Lock()
	delete(l.open, c)
	l.mu.Unlock()
	l.cond.Signal()
}

// ConnState tracks which connections run a handler; set it as the
// http.Server's ConnState.
func (l *Listener) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	switch state {
	case http.StateActive:
		c.active = true
	case http.StateIdle:
		c.active = false
		l.seq++
		c.waiting = l.seq
	}
	l.mu.Unlock()
	if state == http.StateIdle {
		l.cond.Signal() // a connection can be shed now
	}
}

// Open is the number of open connections.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// Close stops accepting; connections already handed on stay open.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cond.Broadcast()
	return l.Listener.Close()
}
