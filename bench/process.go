package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Server is a server process under measurement.
type Server struct {
	Name string
	Cmd  *exec.Cmd
}

// Start runs argv pinned to cpu (taskset), with env added to a minimal
// environment, and logs to logPath.
func Start(name string, cpu int, env []string, logPath string, argv ...string) (*Server, error) {
	args := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	cmd := exec.Command("taskset", args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}, env...)
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s (%v): %w", name, argv, err)
	}
	return &Server{Name: name, Cmd: cmd}, nil
}

// Pid is the server's process id (taskset execs in place, so it is the server's).
func (s *Server) Pid() int { return s.Cmd.Process.Pid }

// Stop ends the server and waits for it, at most 5 s.
func (s *Server) Stop() {
	if s == nil || s.Cmd.Process == nil {
		return
	}
	s.Cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.Cmd.Process.Kill()
		<-done
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitHTTP polls url until it answers with want, or the timeout passes.
func WaitHTTP(ctx context.Context, url string, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to answer %d: %w (last error: %w)", url, want, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
