// Command hostile is the e2e suite's hostile workload. Run inside a pod (as an
// app container, an app init container or a kubectl debug container), it
// tries every route it knows to the node's instance metadata service that
// does not go through the pod's podrole agent, and prints one JSON line per
// route. It imports no product code: it knows only what any pod author knows
// (the metadata addresses, the agent's documented default UID 47181 and
// socket mark 0x504f4452).
//
//	hostile [-role NAME] [-node-akid AKID] [-timeout 2s] [ROUTE-PREFIX...]
//
// -role is the pod's own role ("": the pod has none, so any HTTP answer from a
// metadata address is a leak); -node-akid is the node role's AccessKeyId
// (an answer carrying it is a leak). Every network attempt is bounded by
// -timeout (at most 2 s). Routes, each printed as {"route", "attempted",
// "outcome", "details", "role", "access_key_id", "ms"}:
//
//	imds/v4, imds/v6          the credentials sequence (IMDSv2, falling back to v1) as this process
//	uid-N/...                 the same (and more) after setgroups/setgid/setuid(N) in a child
//	raw/packet, raw/inet, raw/inet6
//	                          AF_PACKET / AF_INET / AF_INET6 SOCK_RAW sockets; if one can be made,
//	                          a hand-made TCP SYN to the metadata address on port 80 is sent
//	mark/v4, mark/v6          SO_MARK 0x504f4452 (the agent's exemption) on a TCP socket, then the
//	                          credentials sequence through it
//	port/tcp4-N, port/udp4-N, port/tcp6-N, port/udp6-N
//	                          other ports and UDP
//	icmp/v4, icmp/v6          an ICMP echo through an unprivileged ping socket
//	proc/...                  the agent's /proc/PID/{environ,mem,fd,root} and ptrace, when its
//	                          process is visible (a pod with shareProcessNamespace: true)
//
// Outcomes: "redirected" (the pod's agent answered with the pod's role),
// "rejected" (refused, reset or unreachable: no answer), "eperm" (the kernel
// refused the privilege: socket, setsockopt, setuid, open, ptrace), "leaked"
// (something other than the pod's agent answered, or the agent's files,
// memory or process were reached), "sent" (a hand-made packet left the
// socket layer: whether it left the pod is what the harness's guard counters
// show), "timeout", "error", "n/a" (not attempted, with the reason).
// Secrets are never printed: AccessKeyIds, role names, sizes and variable
// names only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	metaV4    = "169.254.169.254"
	metaV6    = "fd00:ec2::254"
	agentUID  = 47181
	agentMark = 0x504f4452
	maxWait   = 2 * time.Second
)

// Result is one route's line.
type Result struct {
	Route       string `json:"route"`
	Attempted   bool   `json:"attempted"`
	Outcome     string `json:"outcome"`
	Details     string `json:"details,omitempty"`
	Role        string `json:"role,omitempty"`
	AccessKeyID string `json:"access_key_id,omitempty"`
	Millis      int64  `json:"ms"`
}

type opts struct {
	role, nodeAKID string
	timeout        time.Duration
}

type route struct {
	name string
	run  func(o opts) Result
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "_as" {
		os.Exit(asUID(os.Args[2:]))
	}
	o, prefixes, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		fmt.Fprintln(os.Stderr, "usage: hostile [-role NAME] [-node-akid AKID] [-timeout 2s] [ROUTE-PREFIX...]")
		os.Exit(2)
	}
	for _, r := range runAll(o, selected(allRoutes(o), prefixes)) {
		emit(r)
	}
}

func parse(args []string) (opts, []string, error) {
	var o opts
	fs := flag.NewFlagSet("hostile", flag.ContinueOnError)
	fs.StringVar(&o.role, "role", "", "the pod's own role name (empty: the pod has no role)")
	fs.StringVar(&o.nodeAKID, "node-akid", "", "the node role's AccessKeyId: an answer carrying it is a leak")
	fs.DurationVar(&o.timeout, "timeout", maxWait, "bound of each network attempt (at most 2s)")
	if err := fs.Parse(args); err != nil {
		return o, nil, err
	}
	if o.timeout <= 0 || o.timeout > maxWait {
		o.timeout = maxWait
	}
	return o, fs.Args(), nil
}

func emit(r Result) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// selected keeps the routes whose name starts with one of prefixes (all when
// none is given).
func selected(all []route, prefixes []string) []route {
	if len(prefixes) == 0 || (len(prefixes) == 1 && prefixes[0] == "all") {
		return all
	}
	var out []route
	for _, r := range all {
		for _, p := range prefixes {
			if strings.HasPrefix(r.name, p) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// runAll runs the routes concurrently (each is bounded) except the /proc
// ones, which run one after the other, and returns every result in route
// order. A route may return several results (the uid-N children).
func runAll(o opts, routes []route) []Result {
	results := make([][]Result, len(routes))
	var wg sync.WaitGroup
	var procMu sync.Mutex
	for i, r := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if strings.HasPrefix(r.name, "proc/") {
				procMu.Lock()
				defer procMu.Unlock()
			}
			start := time.Now()
			var res []Result
			if strings.HasPrefix(r.name, "uid-") {
				res = runAsChild(o, r.name)
			} else {
				res = []Result{r.run(o)}
			}
			for j := range res {
				if res[j].Route == "" {
					res[j].Route = r.name
				}
				if res[j].Millis == 0 {
					res[j].Millis = time.Since(start).Milliseconds()
				}
			}
			results[i] = res
		}()
	}
	wg.Wait()
	var out []Result
	for _, r := range results {
		out = append(out, r...)
	}
	return out
}

// childRoutes are what each uid-N child tries after setuid(N).
var childRoutes = map[int][]string{
	agentUID: {"imds/", "mark/", "port/tcp4-81", "proc/"},
	0:        {"imds/"},
	1000:     {"imds/"},
	65534:    {"imds/"},
}

func allRoutes(o opts) []route {
	rs := []route{
		{"imds/v4", func(o opts) Result { return fetchCreds(o, "http://"+metaV4, nil) }},
		{"imds/v6", func(o opts) Result { return fetchCreds(o, "http://["+metaV6+"]", nil) }},
	}
	uids := make([]int, 0, len(childRoutes))
	for u := range childRoutes {
		uids = append(uids, u)
	}
	sort.Ints(uids)
	for _, u := range uids {
		rs = append(rs, route{name: "uid-" + strconv.Itoa(u)})
	}
	rs = append(rs,
		route{"raw/packet", rawPacket},
		route{"raw/inet", func(o opts) Result { return rawInet(o, false) }},
		route{"raw/inet6", func(o opts) Result { return rawInet(o, true) }},
		route{"mark/v4", func(o opts) Result { return markRoute(o, false) }},
		route{"mark/v6", func(o opts) Result { return markRoute(o, true) }},
	)
	for _, p := range []int{81, 443, 8080, 22, 9181} {
		rs = append(rs, route{fmt.Sprintf("port/tcp4-%d", p), tcpPort("tcp4", metaV4, p)})
	}
	for _, p := range []int{80, 53} {
		rs = append(rs, route{fmt.Sprintf("port/udp4-%d", p), udpPort("udp4", metaV4, p)})
	}
	for _, p := range []int{81, 443} {
		rs = append(rs, route{fmt.Sprintf("port/tcp6-%d", p), tcpPort("tcp6", metaV6, p)})
	}
	rs = append(rs, route{"port/udp6-80", udpPort("udp6", metaV6, 80)})
	rs = append(rs,
		route{"icmp/v4", func(o opts) Result { return ping(o, false) }},
		route{"icmp/v6", func(o opts) Result { return ping(o, true) }},
	)
	for _, p := range procRoutes {
		rs = append(rs, route{"proc/" + p.name, procRoute(p)})
	}
	return rs
}

// ---------------------------------------------------------------- errors

// classify maps a network error to an outcome.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// EPERM/EACCES on a send: netfilter dropped the packet in OUTPUT.
		return "rejected"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.EAGAIN),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

// privErr says whether err is the kernel refusing a privilege.
func privErr(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
}

// ---------------------------------------------------------------- IMDS

// fetchCreds runs the credentials sequence an SDK runs (PUT token, GET the
// role listing, GET the role's document) against endpoint and judges who
// answered. dial, when set, makes the connections.
func fetchCreds(o opts, endpoint string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) Result {
	r := Result{Attempted: true}
	ctx, cancel := context.WithTimeout(context.Background(), 3*o.timeout)
	defer cancel()
	if dial == nil {
		dial = (&net.Dialer{Timeout: o.timeout}).DialContext
	}
	client := &http.Client{
		Timeout:   o.timeout,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
	}
	do := func(method, path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, method, endpoint+path, nil)
		if err != nil {
			return 0, "", err
		}
		if method == http.MethodPut {
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		}
		if token != "" {
			req.Header.Set("X-aws-ec2-metadata-token", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, string(b), nil
	}
	var answers []string
	leakIn := func(body string) bool {
		return o.nodeAKID != "" && strings.Contains(body, o.nodeAKID)
	}
	status, body, err := do(http.MethodPut, "/latest/api/token", "")
	if err != nil {
		r.Outcome, r.Details = classify(err), "PUT /latest/api/token: "+err.Error()
		return r
	}
	token := ""
	if status == http.StatusOK {
		token = body
	}
	answers = append(answers, fmt.Sprintf("PUT token %d", status))
	status, body, err = do(http.MethodGet, "/latest/meta-data/iam/security-credentials/", token)
	if err != nil {
		r.Outcome, r.Details = classify(err), "GET role listing after an HTTP answer: "+err.Error()
		return r
	}
	listing := strings.TrimSpace(strings.SplitN(body, "\n", 2)[0])
	answers = append(answers, fmt.Sprintf("GET listing %d %q", status, truncate(listing, 100)))
	r.Role = listing
	leaked := leakIn(body)
	if status == http.StatusOK && listing != "" && !strings.ContainsAny(listing, "/?") {
		s, doc, err := do(http.MethodGet, "/latest/meta-data/iam/security-credentials/"+listing, token)
		if err == nil {
			var c struct{ Code, AccessKeyId string }
			_ = json.Unmarshal([]byte(doc), &c)
			r.AccessKeyID = c.AccessKeyId
			leaked = leaked || leakIn(doc)
			answers = append(answers, fmt.Sprintf("GET document %d code %q", s, c.Code))
		} else {
			answers = append(answers, "GET document: "+err.Error())
		}
	}
	r.Details = strings.Join(answers, "; ")
	switch {
	case leaked:
		r.Outcome, r.Details = "leaked", "the node role's AccessKeyId was served: "+r.Details
	case o.role == "":
		r.Outcome, r.Details = "leaked", "an HTTP answer in a pod that has no agent: "+r.Details
	case status == http.StatusOK && listing == o.role && r.AccessKeyID != "":
		r.Outcome = "redirected"
	default:
		r.Outcome, r.Details = "leaked", "an answer that is not the pod's agent serving role "+o.role+": "+r.Details
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// ---------------------------------------------------------------- uid-N

// runAsChild re-executes this program as a child that switches to the UID
// of name (uid-N) with setgroups/setgid/setuid before it tries its routes.
func runAsChild(o opts, name string) []Result {
	uid, _ := strconv.Atoi(strings.TrimPrefix(name, "uid-"))
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"_as", strconv.Itoa(uid), "-role", o.role, "-node-akid", o.nodeAKID, "-timeout", o.timeout.String()}
	out, err := exec.CommandContext(ctx, self, append(args, childRoutes[uid]...)...).Output()
	var res []Result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r Result
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Route != "" {
			r.Route = name + "/" + r.Route
			res = append(res, r)
		}
	}
	if len(res) == 0 {
		res = []Result{{Route: name, Attempted: true, Outcome: "error", Details: fmt.Sprintf("child printed nothing: %v", err)}}
	}
	return res
}

// asUID is the child: setgroups, setgid and setuid to the UID, then the
// routes given.
func asUID(args []string) int {
	if len(args) < 1 {
		return 2
	}
	uid, err := strconv.Atoi(args[0])
	if err != nil {
		return 2
	}
	o, prefixes, err := parse(args[1:])
	if err != nil {
		return 2
	}
	start := time.Now()
	for _, step := range []struct {
		name string
		f    func() error
	}{
		{"setgroups", func() error { return syscall.Setgroups([]int{uid}) }},
		{"setgid", func() error { return syscall.Setgid(uid) }},
		{"setuid", func() error { return syscall.Setuid(uid) }},
	} {
		if err := step.f(); err != nil {
			out := "error"
			if privErr(err) {
				out = "eperm"
			}
			emit(Result{Route: "setuid", Attempted: true, Outcome: out, Details: fmt.Sprintf("%s(%d) as uid %d: %v", step.name, uid, os.Getuid(), err), Millis: time.Since(start).Milliseconds()})
			return 0
		}
	}
	var own []route
	for _, r := range allRoutes(o) {
		if !strings.HasPrefix(r.name, "uid-") {
			own = append(own, r)
		}
	}
	for _, r := range runAll(o, selected(own, prefixes)) {
		emit(r)
	}
	return 0
}

// ---------------------------------------------------------------- raw sockets

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// synSegment is a TCP SYN from src:sport to dst:80 with its checksum.
func synSegment(src, dst net.IP, sport uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], rand.Uint32())
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	var pseudo []byte
	if v4 := dst.To4(); v4 != nil {
		pseudo = append(append(append([]byte{}, src.To4()...), v4...), 0, syscall.IPPROTO_TCP, 0, 20)
	} else {
		pseudo = append(append(append([]byte{}, src.To16()...), dst.To16()...), 0, 0, 0, 20, 0, 0, 0, syscall.IPPROTO_TCP)
	}
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	return tcp
}

// sourceFor is the address this pod would send from to dst (a UDP connect
// sends nothing).
func sourceFor(network, dst string) (net.IP, error) {
	c, err := net.Dial(network, net.JoinHostPort(dst, "80"))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, nil
}

// rawInet makes an AF_INET(6) SOCK_RAW IPPROTO_TCP socket; if the kernel
// allows it, it sends a SYN to the metadata address on port 80 with it.
func rawInet(o opts, v6 bool) Result {
	r := Result{Attempted: true}
	family, dst, udp := syscall.AF_INET, metaV4, "udp4"
	if v6 {
		family, dst, udp = syscall.AF_INET6, metaV6, "udp6"
	}
	fd, err := syscall.Socket(family, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
	if err != nil {
		r.Outcome, r.Details = socketOutcome(err), "socket(SOCK_RAW, IPPROTO_TCP): "+err.Error()
		return r
	}
	defer syscall.Close(fd)
	src, err := sourceFor(udp, dst)
	if err != nil {
		r.Outcome, r.Details = "error", "raw socket created, but no source address toward "+dst+": "+err.Error()
		return r
	}
	seg := synSegment(src, net.ParseIP(dst), uint16(40000+rand.IntN(20000)))
	var sa syscall.Sockaddr
	if v6 {
		a := &syscall.SockaddrInet6{}
		copy(a.Addr[:], net.ParseIP(dst).To16())
		sa = a
	} else {
		a := &syscall.SockaddrInet4{}
		copy(a.Addr[:], net.ParseIP(dst).To4())
		sa = a
	}
	if err := syscall.Sendto(fd, seg, 0, sa); err != nil {
		r.Outcome, r.Details = classify(err), "raw socket created; sending the SYN: "+err.Error()
		return r
	}
	r.Outcome, r.Details = "sent", fmt.Sprintf("raw socket created and a SYN sent from %s to %s:80", src, dst)
	return r
}

func socketOutcome(err error) string {
	if privErr(err) {
		return "eperm"
	}
	return "error"
}

// rawPacket makes an AF_PACKET SOCK_RAW socket; if the kernel allows it, it
// sends a whole Ethernet frame (IPv4, TCP SYN to the metadata address on port
// 80) to the default gateway's MAC, under every netfilter hook of the pod.
func rawPacket(o opts) Result {
	r := Result{Attempted: true}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_IP)))
	if err != nil {
		r.Outcome, r.Details = socketOutcome(err), "socket(AF_PACKET, SOCK_RAW): "+err.Error()
		return r
	}
	defer syscall.Close(fd)
	ifname, gw, err := defaultRoute()
	if err != nil {
		r.Outcome, r.Details = "error", "packet socket created, but: "+err.Error()
		return r
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		r.Outcome, r.Details = "error", "packet socket created, but: "+err.Error()
		return r
	}
	gwMAC, err := neighbour(gw)
	if err != nil {
		r.Outcome, r.Details = "error", "packet socket created, but: "+err.Error()
		return r
	}
	src, err := sourceFor("udp4", metaV4)
	if err != nil {
		r.Outcome, r.Details = "error", "packet socket created, but: "+err.Error()
		return r
	}
	dst := net.ParseIP(metaV4).To4()
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	binary.BigEndian.PutUint16(ip[4:], uint16(rand.Uint32()))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8], ip[9] = 64, syscall.IPPROTO_TCP
	copy(ip[12:], src.To4())
	copy(ip[16:], dst)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	frame := append(append(append(append([]byte{}, gwMAC...), ifc.HardwareAddr...), 0x08, 0x00), ip...)
	frame = append(frame, synSegment(src, dst, uint16(40000+rand.IntN(20000)))...)
	sa := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: ifc.Index, Halen: 6}
	copy(sa.Addr[:], gwMAC)
	if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
		r.Outcome, r.Details = classify(err), "packet socket created; sending the frame: "+err.Error()
		return r
	}
	r.Outcome, r.Details = "sent", fmt.Sprintf("packet socket created and an Ethernet frame with a SYN %s -> %s:80 sent on %s to gateway %s (%s)", src, metaV4, ifname, gw, gwMAC)
	return r
}

// defaultRoute reads the IPv4 default route from /proc/net/route.
func defaultRoute() (string, net.IP, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", nil, err
	}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 3 || f[1] != "00000000" {
			continue
		}
		v, err := strconv.ParseUint(f[2], 16, 32)
		if err != nil {
			continue
		}
		gw := make(net.IP, 4)
		binary.LittleEndian.PutUint32(gw, uint32(v))
		return f[0], gw, nil
	}
	return "", nil, errors.New("no IPv4 default route")
}

// neighbour returns the MAC of ip from the ARP table, prompting resolution
// with a datagram to its discard port if it is not there yet.
func neighbour(ip net.IP) (net.HardwareAddr, error) {
	lookup := func() net.HardwareAddr {
		b, _ := os.ReadFile("/proc/net/arp")
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) >= 4 && f[0] == ip.String() && f[3] != "00:00:00:00:00:00" {
				if m, err := net.ParseMAC(f[3]); err == nil {
					return m
				}
			}
		}
		return nil
	}
	if m := lookup(); m != nil {
		return m, nil
	}
	if c, err := net.Dial("udp4", net.JoinHostPort(ip.String(), "9")); err == nil {
		_, _ = c.Write([]byte("x"))
		c.Close()
	}
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if m := lookup(); m != nil {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no ARP entry for the gateway %s", ip)
}

// ---------------------------------------------------------------- SO_MARK

// markRoute sets the agent's socket mark on a TCP socket and, if the kernel
// allows that, runs the credentials sequence through marked sockets.
func markRoute(o opts, v6 bool) Result {
	family, endpoint := syscall.AF_INET, "http://"+metaV4
	if v6 {
		family, endpoint = syscall.AF_INET6, "http://["+metaV6+"]"
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err != nil {
		return Result{Attempted: true, Outcome: "error", Details: "socket: " + err.Error()}
	}
	err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, agentMark)
	syscall.Close(fd)
	if err != nil {
		return Result{Attempted: true, Outcome: socketOutcome(err), Details: fmt.Sprintf("setsockopt(SO_MARK, %#x): %v", agentMark, err)}
	}
	d := &net.Dialer{Timeout: o.timeout, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, agentMark)
		}); err != nil {
			return err
		}
		return serr
	}}
	r := fetchCreds(o, endpoint, d.DialContext)
	r.Details = fmt.Sprintf("SO_MARK %#x accepted; ", agentMark) + r.Details
	return r
}

// ---------------------------------------------------------------- ports

// tcpPort connects to addr:port; a connection is a leak (nothing in the pod
// should answer there).
func tcpPort(network, addr string, port int) func(o opts) Result {
	return func(o opts) Result {
		r := Result{Attempted: true}
		c, err := net.DialTimeout(network, net.JoinHostPort(addr, strconv.Itoa(port)), o.timeout)
		if err != nil {
			r.Outcome, r.Details = classify(err), err.Error()
			return r
		}
		defer c.Close()
		r.Outcome, r.Details = "leaked", fmt.Sprintf("connected to %s from %s", c.RemoteAddr(), c.LocalAddr())
		return r
	}
}

// udpPort sends a datagram to addr:port and waits for an answer or an error.
func udpPort(network, addr string, port int) func(o opts) Result {
	return func(o opts) Result {
		r := Result{Attempted: true}
		c, err := net.DialTimeout(network, net.JoinHostPort(addr, strconv.Itoa(port)), o.timeout)
		if err != nil {
			r.Outcome, r.Details = classify(err), err.Error()
			return r
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(o.timeout))
		if _, err := c.Write([]byte("GET /latest/meta-data/ HTTP/1.0\r\n\r\n")); err != nil {
			r.Outcome, r.Details = classify(err), "send: "+err.Error()
			return r
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			r.Outcome, r.Details = classify(err), "after the send: "+err.Error()
			return r
		}
		r.Outcome, r.Details = "leaked", fmt.Sprintf("%d bytes answered from %s", n, c.RemoteAddr())
		return r
	}
}

// ---------------------------------------------------------------- ICMP

// ping sends one echo request through an unprivileged ICMP socket
// (SOCK_DGRAM, allowed by net.ipv4.ping_group_range).
func ping(o opts, v6 bool) Result {
	r := Result{Attempted: true}
	family, proto, dst, echo := syscall.AF_INET, syscall.IPPROTO_ICMP, metaV4, byte(8)
	if v6 {
		family, proto, dst, echo = syscall.AF_INET6, syscall.IPPROTO_ICMPV6, metaV6, 128
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM, proto)
	if err != nil {
		r.Outcome, r.Details = socketOutcome(err), "socket(SOCK_DGRAM, ICMP): "+err.Error()
		return r
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(o.timeout.Nanoseconds())
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	var sa syscall.Sockaddr
	if v6 {
		a := &syscall.SockaddrInet6{}
		copy(a.Addr[:], net.ParseIP(dst).To16())
		sa = a
	} else {
		a := &syscall.SockaddrInet4{}
		copy(a.Addr[:], net.ParseIP(dst).To4())
		sa = a
	}
	// Connected, so that ICMP errors come back as errors on this socket.
	if err := syscall.Connect(fd, sa); err != nil {
		r.Outcome, r.Details = classify(err), "connect: "+err.Error()
		return r
	}
	msg := []byte{echo, 0, 0, 0, 0, 1, 0, 1, 'p', 'o', 'd', 'r', 'o', 'l', 'e'}
	if !v6 { // the kernel computes ICMPv6 checksums itself
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	if _, err := syscall.Write(fd, msg); err != nil {
		r.Outcome, r.Details = classify(err), "echo request: "+err.Error()
		return r
	}
	buf := make([]byte, 512)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		r.Outcome, r.Details = classify(err), "after the echo request: "+err.Error()
		return r
	}
	r.Outcome, r.Details = "leaked", fmt.Sprintf("%d bytes answered (ICMP type %d) from %s", n, buf[0], dst)
	return r
}

// ---------------------------------------------------------------- /proc

// agentPID finds the agent's process (podrole-sidecar serve) in this PID
// namespace; it is visible only when the pod shares its PID namespace.
func agentPID() (int, string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(argv) >= 2 && filepath.Base(argv[0]) == "podrole-sidecar" && argv[1] == "serve" {
			return pid, strings.Join(argv[:2], " ")
		}
	}
	return 0, ""
}

type procProbe struct {
	name string
	try  func(pid int) (string, error) // what was reached (no secrets), or the error
}

var procRoutes = []procProbe{
	{"environ", func(pid int) (string, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			return "", err
		}
		var names []string
		for _, kv := range strings.Split(string(b), "\x00") {
			if k, _, ok := strings.Cut(kv, "="); ok {
				names = append(names, k)
			}
		}
		return fmt.Sprintf("read %d bytes of the agent's environment: %s", len(b), strings.Join(names, ",")), nil
	}},
	{"mem", func(pid int) (string, error) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			return "", err
		}
		defer f.Close()
		return "opened the agent's memory", nil
	}},
	{"maps", func(pid int) (string, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			return "", err
		}
		if len(b) == 0 {
			return "", syscall.EACCES // the kernel hides maps from non-tracers as an empty file
		}
		return fmt.Sprintf("read %d bytes of the agent's memory map", len(b)), nil
	}},
	{"fd", func(pid int) (string, error) {
		// Listing the directory is allowed to root (CAP_DAC_OVERRIDE);
		// following an entry, which opens the agent's files and pipes, is
		// checked like ptrace.
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return "", err
		}
		var targets []string
		var last error = syscall.EACCES
		for _, e := range ents {
			t, err := os.Readlink(dir + "/" + e.Name())
			if err != nil {
				last = err
				continue
			}
			targets = append(targets, e.Name()+"->"+t)
		}
		if len(targets) == 0 {
			return "", fmt.Errorf("listed %d descriptors, could follow none: %w", len(ents), last)
		}
		return fmt.Sprintf("followed %d of the agent's %d file descriptors: %s", len(targets), len(ents), truncate(strings.Join(targets, " "), 200)), nil
	}},
	{"root", func(pid int) (string, error) {
		root := fmt.Sprintf("/proc/%d/root", pid)
		ents, err := os.ReadDir(root + "/")
		if err != nil {
			return "", err
		}
		what := fmt.Sprintf("listed the agent's root filesystem (%d entries)", len(ents))
		// The projected web-identity token, where the agent has one.
		if b, err := os.ReadFile(root + "/var/run/secrets/podrole/token"); err == nil {
			what += fmt.Sprintf(" and read its service-account token (%d bytes)", len(b))
		}
		return what, nil
	}},
	{"ptrace", func(pid int) (string, error) {
		// PTRACE_SEIZE does not stop the agent; the kernel detaches when
		// this process exits.
		const ptraceSeize = 0x4206
		if _, _, e := syscall.Syscall6(syscall.SYS_PTRACE, ptraceSeize, uintptr(pid), 0, 0, 0, 0); e != 0 {
			return "", e
		}
		return "attached to the agent with ptrace", nil
	}},
}

func procRoute(p procProbe) func(o opts) Result {
	return func(o opts) Result {
		pid, cmd := agentPID()
		if pid == 0 {
			return Result{Outcome: "n/a", Details: "no podrole-sidecar serve process is visible (the pod does not share its PID namespace)"}
		}
		r := Result{Attempted: true}
		what, err := p.try(pid)
		switch {
		case err == nil:
			r.Outcome, r.Details = "leaked", fmt.Sprintf("pid %d (%s), as uid %d: %s", pid, cmd, os.Getuid(), what)
		case privErr(err):
			r.Outcome, r.Details = "eperm", fmt.Sprintf("pid %d (%s), as uid %d: %v", pid, cmd, os.Getuid(), err)
		default:
			r.Outcome, r.Details = "error", fmt.Sprintf("pid %d (%s), as uid %d: %v", pid, cmd, os.Getuid(), err)
		}
		return r
	}
}
