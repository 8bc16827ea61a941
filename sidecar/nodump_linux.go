//go:build linux

package main

import (
	"os"
	"syscall"
)

// noDump makes this process non-dumpable (prctl PR_SET_DUMPABLE 0): another
// process of the pod that shares its PID namespace (shareProcessNamespace)
// may then not ptrace it or read its /proc/<pid>/mem, environ or root
// without CAP_SYS_PTRACE, even as the same UID. The agent holds the role's
// credentials (and with --source=node the node's) in memory, and init runs
// as root: neither may be an open book to an app container. It also turns
// off core dumps, which would hold the same secrets. Every subcommand calls
// it first, before anything is read or fetched.
func noDump() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); e != 0 {
		return os.NewSyscallError("prctl(PR_SET_DUMPABLE, 0)", e)
	}
	return nil
}

// dumpable reports prctl(PR_GET_DUMPABLE) != 0.
func dumpable() (bool, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_DUMPABLE, 0, 0)
	if e != 0 {
		return false, os.NewSyscallError("prctl(PR_GET_DUMPABLE)", e)
	}
	return r != 0, nil
}
