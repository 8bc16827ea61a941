//go:build !linux

package main

import (
	"fmt"
	"syscall"

	"github.com/podrole/podrole/contract"
)

type dialControl = func(network, address string, c syscall.RawConn) error

// markedDialControl refuses a mark: socket marks (SO_MARK) and the redirect
// that exempts them exist only on Linux.
func markedDialControl(mark uint32) (dialControl, error) {
	if mark == 0 {
		return nil, nil
	}
	return nil, fmt.Errorf("--agent-mark=%s: socket marks exist only on Linux; drop --agent-mark", contract.FormatMark(mark))
}
