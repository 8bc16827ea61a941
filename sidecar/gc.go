package main

import "runtime/debug"

// defaultServeGCPercent is the garbage collector's target (GOGC) of
// `podrole-sidecar serve` when neither GOGC nor GOMEMLIMIT is set.
//
// The agent's live heap is about 1.3 MiB, but at the runtime's default,
// GOGC=100, the heap goal never goes below 4 MiB, and the runtime keeps
// that much heap resident under load: the agent grew from 13 to 17.4 MiB
// after 60 s at 2,000 requests/s. At 50 the floor is 2 MiB (15.5 MiB
// measured). The collector runs about twice as often, which the IMDS
// handler's few allocations per request make cheap (README "Performance").
// Not a soft memory limit (GOMEMLIMIT): the runtime counts some 6 MiB of
// its own besides the heap, so a limit low enough to matter (8 MiB) left
// the heap no room once dozens of clients were connected, and the agent
// spent two to three times the CPU per request collecting.
const defaultServeGCPercent = 50

// serveGCPercent returns the GC target `serve` sets, and false when the
// environment sets GOGC or GOMEMLIMIT: the runtime has applied those, and
// an operator who tuned one did not ask for this default. Empty is unset,
// as for the runtime.
func serveGCPercent(lookup func(string) (string, bool)) (percent int, set bool) {
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v, ok := lookup(k); ok && v != "" {
			return 0, false
		}
	}
	return defaultServeGCPercent, true
}

// applyServeGCPercent sets serveGCPercent's target, if any.
func applyServeGCPercent(lookup func(string) (string, bool)) {
	if percent, ok := serveGCPercent(lookup); ok {
		debug.SetGCPercent(percent)
	}
}
