//go:build !linux

package redirect

import (
	"context"
	"errors"
	"log/slog"
)

// NewSystem returns a System that refuses to act: network namespaces and
// iptables exist only on Linux. Dry runs still work (with --ipv6 forced).
func NewSystem(*slog.Logger) System { return otherSystem{} }

type otherSystem struct{}

var errNotLinux = errors.New("podrole-sidecar init runs only on Linux")

func (otherSystem) HasIPv6(context.Context) (bool, error)          { return false, errNotLinux }
func (otherSystem) Tables(context.Context, Family) (Tables, error) { return nil, errNotLinux }
