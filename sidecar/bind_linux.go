//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// boundSocket is a TCP socket bound to its address but not yet listening:
// the address is the agent's (a taken port fails now, before any other
// work), while a connection to it is still refused, not queued. The agent
// opens its IMDS port this way so that the node IMDS check (an unmarked
// request, which podrole-init's rules send to this very port) meets a
// closed port, as it would if the agent were not there, instead of the
// agent's own answers.
type boundSocket struct {
	fd   int
	addr *net.TCPAddr
}

// bindTCP binds a TCP socket to addr (network "tcp", "tcp4" or "tcp6"),
// with SO_REUSEADDR as net.Listen sets it, and IPV6_V6ONLY for "tcp6" or
// an IPv6 address, as net.Listen does.
func bindTCP(network, addr string) (pendingListener, error) {
	ta, err := net.ResolveTCPAddr(network, addr)
	if err != nil {
		return nil, err
	}
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: ta, Err: os.NewSyscallError(call, err)}
	}
	var sa syscall.Sockaddr
	family, v6only := syscall.AF_INET, false
	switch ip4 := ta.IP.To4(); {
	case ip4 != nil && network != "tcp6":
		sa4 := &syscall.SockaddrInet4{Port: ta.Port}
		copy(sa4.Addr[:], ip4)
		sa = sa4
	case ta.IP == nil && network == "tcp4":
		sa = &syscall.SockaddrInet4{Port: ta.Port}
	default: // an IPv6 address, or every address (dual stack, like net.Listen)
		family, v6only = syscall.AF_INET6, ta.IP != nil || network == "tcp6"
		sa6 := &syscall.SockaddrInet6{Port: ta.Port}
		copy(sa6.Addr[:], ta.IP.To16())
		if ta.Zone != "" {
			ifi, err := net.InterfaceByName(ta.Zone)
			if err != nil {
				return nil, err
			}
			sa6.ZoneId = uint32(ifi.Index) //nolint:gosec // G115: interface indexes are positive 32-bit numbers (the kernel's ifindex is an int)
		}
		sa = sa6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.IPPROTO_TCP)
	if errors.Is(err, syscall.EAFNOSUPPORT) && ta.IP == nil && network == "tcp" { // every address, on a machine without IPv6
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Port: ta.Port}
		fd, err = syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.IPPROTO_TCP)
	}
	if err != nil {
		return nil, opErr("socket", err)
	}
	fail := func(call string, err error) (pendingListener, error) {
		syscall.Close(fd)
		return nil, opErr(call, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	if family == syscall.AF_INET6 {
		on := 0
		if v6only {
			on = 1
		}
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, on); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	b := &boundSocket{fd: fd, addr: &net.TCPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone}}
	switch s := got.(type) {
	case *syscall.SockaddrInet4:
		b.addr.IP, b.addr.Port = net.IP(append([]byte(nil), s.Addr[:]...)), s.Port
	case *syscall.SockaddrInet6:
		b.addr.IP, b.addr.Port = net.IP(append([]byte(nil), s.Addr[:]...)), s.Port
	}
	return b, nil
}

// Addr is the bound address (the real port when 0 was asked for).
func (b *boundSocket) Addr() net.Addr { return b.addr }

// Listen starts listening; the socket then belongs to the listener.
func (b *boundSocket) Listen() (net.Listener, error) {
	if b.fd < 0 {
		return nil, fmt.Errorf("listen on %s: socket closed", b.addr)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := syscall.Listen(b.fd, 4096); err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: b.addr, Err: os.NewSyscallError("listen", err)}
	}
	f := os.NewFile(uintptr(b.fd), "tcp:"+b.addr.String())
	b.fd = -1
	defer f.Close() // FileListener holds its own copy
	return net.FileListener(f)
}

// Close releases the socket if Listen has not taken it.
func (b *boundSocket) Close() error {
	if b.fd < 0 {
		return nil
	}
	err := syscall.Close(b.fd)
	b.fd = -1
	return err
}
