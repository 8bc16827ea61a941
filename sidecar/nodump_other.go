//go:build !linux

package main

// noDump does nothing: PR_SET_DUMPABLE is Linux's, and the agent runs in
// Linux pods only.
func noDump() error { return nil }
