// Package redirect builds and applies the iptables rules of `podrole-sidecar
// init`: inside the pod's own network namespace, and nowhere else, metadata
// traffic from the app is sent to the podrole agent (redirect mode) or
// refused (block mode).
//
// # How
//
// The rules are built as data first (a Plan, see Build and BuildCleanup) and
// only then applied through github.com/coreos/go-iptables; --dry-run prints
// the same Plan in iptables-restore form and touches nothing. All our rules
// live in a chain of our own, PODROLE_OUTPUT, in the nat and filter tables,
// reached by one jump inserted first in OUTPUT. Cleanup therefore removes
// exactly what we added: the jumps and our chains, nothing else. Applying
// flushes and refills our chains and keeps exactly one jump, so running init
// twice gives the same rules. After applying, the rules are read back and
// compared with the plan; any difference is an error, the init container
// fails and the pod does not start (fail closed). A half-applied plan is
// not rolled back: what is left can only refuse metadata traffic, never let
// more through, and the kubelet reruns init, which converges.
//
// # Redirect mode: why these rules
//
// The SDKs call 169.254.169.254:80 (and [fd00:ec2::254]:80 on IPv6
// instances). In nat OUTPUT, tcp to that address and port is DNATed to the
// agent on 127.0.0.1:<port> ([::1]:<port> for IPv6, where the agent listens
// too), from every process, except packets carrying the agent's socket mark
// (--agent-mark) when one is given. The redirect alone is not enough:
//
//   - Other ports and protocols to the metadata address are not redirected,
//     and on a node with a hop limit of 2 they would reach the real IMDS, so
//     filter OUTPUT rejects every remaining packet to it: tcp with a reset,
//     anything else with an ICMP port unreachable, so clients fail at once
//     instead of timing out. Redirected packets reach filter OUTPUT already
//     rewritten to loopback (nat OUTPUT runs first), so the reject never
//     sees them.
//   - With --source=node the agent needs one way out to the real IMDS, for
//     the node's base credentials and harmless metadata. It is a socket mark
//     (-m mark --mark, RETURN first in filter, "! --mark" in nat), not a UID:
//     any root process can setuid to a UID, and an image can run as it, but
//     setting SO_MARK needs CAP_NET_RAW (Linux 5.17+) or CAP_NET_ADMIN. The
//     webhook injects the agent with NET_RAW and takes NET_RAW from every
//     other container (NET_ADMIN is refused), so no other process of the pod
//     can put the mark on a packet. The kernel checks the capability against
//     the network namespace's owner, so a user namespace an app creates does
//     not help it either.
//   - With --source=web-identity (--agent-mark 0) nothing is exempt: not even
//     the agent reaches the node's IMDS, and it does not try.
//   - Packets without a local socket (kernel replies) carry no mark, so they
//     are rejected too.
//   - Netfilter sees only traffic sent through the pod's IP stack. A
//     container with CAP_NET_RAW can write raw frames on a packet socket,
//     which bypasses it; that is one more reason NET_RAW is taken from app
//     containers (the restricted Pod Security Standard drops it too), and
//     with --source=web-identity nodes can cut pods off IMDS entirely (hop
//     limit 1).
//   - Only the init container may hold NET_ADMIN: an app container with it
//     could delete these rules or set the mark.
//
// # Block mode
//
// For pods that asked for no role: every packet to the metadata address
// (both families when IPv6 is on), from every process, is rejected in filter
// OUTPUT. Rejected, not dropped, so SDKs fail fast instead of retrying into
// timeouts. No exemption (--block with --agent-mark is refused) and no
// redirect.
//
// # IPv6
//
// --ipv6=auto turns the IPv6 rules on when the namespace has an IPv6 address
// that is not link-local or loopback, or a usable route covering
// fd00:ec2::254 (a default route does); true and false force it.
//
// # iptables-nft or iptables-legacy
//
// Rules must land in the backend the namespace already uses, or they would be
// split across two rule sets whose interplay nobody reads. Like istio and the
// Kubernetes iptables wrapper, the backend with more rules in *-save output
// wins, nft on a tie (the usual case in a fresh pod namespace); when one
// backend is missing or fails, the other is used.
package redirect
