//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/podrole/podrole/contract"
)

// dialControl is a net.Dialer Control function.
type dialControl = func(network, address string, c syscall.RawConn) error

// markedDialControl returns the Control that puts mark on every socket the
// agent dials, after checking once, on a throwaway socket, that this
// process may set it: podrole-init exempts exactly this mark from the
// metadata redirect, so an agent that cannot set it would call its own
// redirect instead of the node's metadata service and fail obscurely later.
// Mark 0 returns a nil Control (nothing to set).
func markedDialControl(mark uint32) (dialControl, error) {
	if mark == 0 {
		return nil, nil
	}
	if err := probeMark(mark); err != nil {
		return nil, err
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setMark(int(fd), mark) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("--agent-mark=%s on the connection to %s: %w", contract.FormatMark(mark), address, serr)
		}
		return nil
	}, nil
}

// setMark sets SO_MARK. The kernel takes the option as a 32-bit int, so
// marks above 0x7fffffff are passed as their two's complement.
func setMark(fd int, mark uint32) error {
	return os.NewSyscallError("setsockopt SO_MARK", syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, int(int32(mark)))) //nolint:gosec // G115: the two's complement is what the kernel expects (see above)
}

func probeMark(mark uint32) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if errors.Is(err, syscall.EAFNOSUPPORT) {
		fd, err = syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("--agent-mark: open a socket to check the mark: %w", err)
	}
	defer syscall.Close(fd)
	if err := setMark(fd, mark); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("--agent-mark=%s: setting the socket mark needs CAP_NET_RAW (Linux 5.17+) or CAP_NET_ADMIN, "+
				"and this process has neither; podrole injects the agent with NET_RAW (a policy may have dropped it); "+
				"on kernels older than 5.17 use --source=web-identity: %w", contract.FormatMark(mark), err)
		}
		return fmt.Errorf("--agent-mark=%s: %w", contract.FormatMark(mark), err)
	}
	return nil
}
