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
// instances). In nat OUTPUT, tcp to that address and port from every UID but
// the agent's is DNATed to the agent on 127.0.0.1:<port> ([::1]:<port> for
// IPv6, where the agent listens too). The redirect alone is not enough:
//
//   - Other ports and protocols to the metadata address are not redirected,
//     and on a node with a hop limit of 2 they would reach the real IMDS, so
//     filter OUTPUT rejects every remaining packet to it from every UID but
//     the agent's: tcp with a reset, anything else with an ICMP port
//     unreachable, so clients fail at once instead of timing out. Redirected
//     packets reach filter OUTPUT already rewritten to loopback (nat OUTPUT
//     runs first), so the reject never sees them.
//   - The agent's own UID is the one way out to the real IMDS: it needs it
//     for the node's base credentials and harmless metadata (--source=node).
//     The exclusion is by UID (-m owner --uid-owner), so the webhook refuses
//     pods whose containers run as that UID.
//   - Packets without a local socket owner (kernel replies) to the metadata
//     address never match the agent's UID, so they are rejected too.
//   - The owner match sees only traffic sent through the pod's IP stack.
//     A container with CAP_NET_RAW can still write raw frames on a packet
//     socket, which bypasses netfilter; app containers should drop NET_RAW
//     (the restricted Pod Security Standard drops it), and with
//     --source=web-identity nodes can cut pods off IMDS entirely (hop limit 1).
//   - Only the init container may hold NET_ADMIN: an app container with it
//     could delete these rules.
//
// # Block mode
//
// For pods that asked for no role: every packet to the metadata address
// (both families when IPv6 is on), from every UID, is rejected in filter
// OUTPUT. Rejected, not dropped, so SDKs fail fast instead of retrying into
// timeouts. No exclusion and no redirect.
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
