// Command netnshelper is the server and the clients of the real-namespace
// test (netns_linux_test.go): it stands in for the agent and for the node's
// IMDS, and reports how a connection ended (ok, refused, reset, timeout), so
// the test can tell a fast reject from a silent drop.
//
//	netnshelper serve -marker M -tcp 127.0.0.1:9181,[::1]:9181 -udp 169.254.169.254:5353
//	netnshelper get [-mark 0x504f4452] http://169.254.169.254/latest/meta-data/
//	netnshelper udp [-mark 0x504f4452] 169.254.169.254:5353
//	netnshelper imds [-mark 0x504f4452] http://169.254.169.254
//	netnshelper setmark 0x504f4452
//	netnshelper open /proc/1234/environ
//
// With -node-creds, serve also answers like a node's IMDS on the paths of
// the token, the instance profile, placement and the identity document, so
// the real agent can take its base credentials from it: fakeaws.NodeIMDS,
// the Go tests' one node IMDS stand-in, with the node role's key from the
// file. Every other path answers with the marker. Secret keys and tokens are
// never printed.
//
// -mark puts a socket mark (SO_MARK) on the client's socket, as the agent
// does; a process without CAP_NET_RAW or CAP_NET_ADMIN fails with
// "mark-denied". setmark only tries to set one; open reports whether a
// /proc file of another process can be opened (open-ok, open-denied).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podrole/podrole/sidecar/internal/fakeaws"
)

// clientTimeout is far above a local reject and a loopback answer, so a
// "timeout" result means packets were silently dropped.
const clientTimeout = 5 * time.Second

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netnshelper serve|get|udp ...")
		os.Exit(2)
	}
	var err error
	switch cmd := os.Args[1]; cmd {
	case "serve":
		err = serve(os.Args[2:])
	case "get", "udp", "imds":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		mark := fs.Uint64("mark", 0, "socket mark to set on the client's socket (0: none)")
		_ = fs.Parse(os.Args[2:])
		dialer := &net.Dialer{Timeout: clientTimeout, Control: markControl(uint32(*mark))}
		switch cmd {
		case "get":
			err = get(dialer, fs.Arg(0))
		case "udp":
			err = udp(dialer, fs.Arg(0))
		case "imds":
			err = imdsCreds(dialer, fs.Arg(0))
		}
	case "setmark":
		var m uint64
		if m, err = strconv.ParseUint(os.Args[2], 0, 32); err == nil {
			err = setMarkOnce(uint32(m))
		}
		if err == nil {
			fmt.Println("mark-set")
		}
	case "open":
		err = open(os.Args[2])
		if err == nil {
			fmt.Println("open-ok")
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Println(classify(err))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

// classify names how a connection failed, as the test asserts it.
func classify(err error) string {
	var ne net.Error
	var me markError
	switch {
	case errors.As(err, &me):
		if errors.Is(err, syscall.EPERM) {
			return "mark-denied" // no CAP_NET_RAW / CAP_NET_ADMIN
		}
		return "error"
	case errors.Is(err, os.ErrPermission) && strings.HasPrefix(os.Args[1], "open"):
		return "open-denied"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPERM):
		return "denied" // the local netfilter refused the send

	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error"
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	marker := fs.String("marker", "", "text every answer starts with")
	tcp := fs.String("tcp", "", "comma-separated HTTP listen addresses")
	udpAddrs := fs.String("udp", "", "comma-separated UDP echo addresses")
	nodeCreds := fs.String("node-creds", "", "JSON file with the node role's AccessKeyId, SecretAccessKey and Token")
	nodeRole := fs.String("node-role", "node-role", "the node role's name")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s uid=%d path=%s", *marker, os.Getuid(), r.URL.Path)
	})
	if *nodeCreds != "" {
		raw, err := os.ReadFile(*nodeCreds)
		if err != nil {
			return fmt.Errorf("read the node role's key: %w", err)
		}
		var key struct{ AccessKeyId, SecretAccessKey, Token string }
		if err := json.Unmarshal(raw, &key); err != nil {
			return fmt.Errorf("%s: %w", *nodeCreds, err)
		}
		node := fakeaws.NewNode("us-east-1", "us-east-1a")
		node.Role, node.AccessKeyID, node.SecretAccessKey, node.SessionToken = *nodeRole, key.AccessKeyId, key.SecretAccessKey, key.Token
		for _, p := range []string{"PUT /latest/api/token", "GET /latest/meta-data/iam/security-credentials/",
			"GET /latest/meta-data/placement/", "GET /latest/dynamic/instance-identity/document"} {
			mux.Handle(p, node)
		}
	}
	h := mux
	for _, a := range split(*tcp) {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		go func() { _ = http.Serve(l, h) }()
	}
	for _, a := range split(*udpAddrs) {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = c.WriteTo([]byte(*marker+" udp"), from)
			}
		}()
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// markError is a failure to set the socket mark, told apart from a
// netfilter reject (EPERM from send) by type.
type markError struct{ err error }

func (e markError) Error() string { return "set SO_MARK: " + e.err.Error() }
func (e markError) Unwrap() error { return e.err }

func setMark(fd int, mark uint32) error {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, int(int32(mark))); err != nil {
		return markError{err}
	}
	return nil
}

// markControl is a Dialer Control that sets mark (nil for 0).
func markControl(mark uint32) func(string, string, syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setMark(int(fd), mark) }); err != nil {
			return err
		}
		return serr
	}
}

func setMarkOnce(mark uint32) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return setMark(fd, mark)
}

// open opens path, which is where /proc checks access to another process
// (environ, mem, root, cwd, exe); nothing is read.
func open(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func get(dialer *net.Dialer, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	fmt.Printf("%s", b)
	return nil
}

// imdsCreds fetches the instance-profile credentials the IMDSv2 way, as an
// SDK does, and prints the role name and AccessKeyId only.
func imdsCreds(dialer *net.Dialer, base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext}}
	call := func(method, path, token string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return "", err
		}
		if token == "" {
			req.Header.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "60")
		} else {
			req.Header.Set("X-Aws-Ec2-Metadata-Token", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		return string(b), nil
	}
	token, err := call(http.MethodPut, "/latest/api/token", "")
	if err != nil {
		return err
	}
	roles, err := call(http.MethodGet, "/latest/meta-data/iam/security-credentials/", token)
	if err != nil {
		return err
	}
	role := strings.TrimSpace(strings.Split(roles, "\n")[0])
	body, err := call(http.MethodGet, "/latest/meta-data/iam/security-credentials/"+role, token)
	if err != nil {
		return err
	}
	var doc struct{ Code, AccessKeyId string }
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		return fmt.Errorf("credentials document: %w", err)
	}
	fmt.Printf("role=%s code=%s key=%s", role, doc.Code, doc.AccessKeyId)
	return nil
}

func udp(dialer *net.Dialer, addr string) error {
	c, err := dialer.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(clientTimeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	fmt.Printf("%s", buf[:n])
	return nil
}
