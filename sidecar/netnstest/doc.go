// Package netnstest holds tests of the podrole-sidecar image that need root:
// the root filesystem scripts/sidecar-rootfs.sh assembles, run for real in a
// throwaway network namespace. The redirect's own real-kernel test lives
// next to the code, in sidecar/redirect/netns_linux_test.go.
package netnstest
