package redirect

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/podrole/podrole/contract"
)

// Scopes of /proc/net/if_inet6 (the kernel's IPV6_ADDR_* scope bits) that
// cannot reach fd00:ec2::254.
const (
	scopeHost = 0x10 // loopback
	scopeLink = 0x20 // fe80::/10
)

// Route flags of /proc/net/ipv6_route.
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200 // unreachable/prohibit routes the kernel keeps on lo
)

// hasUsableIPv6Address reports whether an /proc/net/if_inet6 listing holds an
// address that is neither loopback nor link-local.
func hasUsableIPv6Address(r io.Reader) (bool, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		scope, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return false, fmt.Errorf("parse if_inet6 scope %q: %w", f[3], err)
		}
		if scope&(scopeHost|scopeLink) == 0 {
			return true, nil
		}
	}
	return false, sc.Err()
}

// hasRouteToMetadata reports whether an /proc/net/ipv6_route listing holds a
// usable route (up, not a reject route) whose prefix covers fd00:ec2::254.
// A default route (::/0) always does.
func hasRouteToMetadata(r io.Reader) (bool, error) {
	target := netip.MustParseAddr(contract.MetadataIPv6)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		raw, err := hex.DecodeString(f[0])
		if err != nil || len(raw) != 16 {
			return false, fmt.Errorf("parse ipv6_route destination %q", f[0])
		}
		bits, err := strconv.ParseUint(f[1], 16, 8)
		if err != nil || bits > 128 {
			return false, fmt.Errorf("parse ipv6_route prefix length %q", f[1])
		}
		flags, err := strconv.ParseUint(f[8], 16, 32)
		if err != nil {
			return false, fmt.Errorf("parse ipv6_route flags %q: %w", f[8], err)
		}
		if flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		pfx := netip.PrefixFrom(netip.AddrFrom16([16]byte(raw)), int(bits))
		if pfx.Masked().Contains(target) {
			return true, nil
		}
	}
	return false, sc.Err()
}
