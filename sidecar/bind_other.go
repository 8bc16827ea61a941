//go:build !linux

package main

import "net"

// bindTCP listens at once where binding without listening is not wired up:
// the node IMDS check may then meet the agent's own port. podrole's agent
// runs on Linux only; this keeps the package building elsewhere.
func bindTCP(network, addr string) (pendingListener, error) {
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return listening{l}, nil
}

type listening struct{ l net.Listener }

func (s listening) Addr() net.Addr                { return s.l.Addr() }
func (s listening) Listen() (net.Listener, error) { return s.l, nil }
func (s listening) Close() error                  { return s.l.Close() }
