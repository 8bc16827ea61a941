package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux this runs on (getconf CLK_TCK).
const clockTick = 100

// CPUTime returns the user+system CPU time a process has used, from /proc/PID/stat.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields after its ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	// After ')': state is f[0], so utime (field 14) is f[11] and stime f[12].
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat times: %w", pid, errors.Join(err1, err2))
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// RSS returns the resident set size of a process in bytes, from /proc/PID/status.
func RSS(pid int) (int64, error) { return procStatusBytes(pid, "VmRSS") }

// RSSSplit returns the anonymous and the file-backed parts of a process's
// resident set in bytes (RssAnon and RssFile of /proc/PID/status; 0, 0 if
// unreadable). The split shows what a change can move: anon is heap,
// stacks and runtime; file-backed is the executable's pages, mostly what
// it links.
func RSSSplit(pid int) (anon, file int64) {
	anon, err := procStatusBytes(pid, "RssAnon")
	if err != nil {
		return 0, 0
	}
	if file, err = procStatusBytes(pid, "RssFile"); err != nil {
		return 0, 0
	}
	return anon, file
}

// PeakRSS returns the highest resident set size a process has had, in
// bytes (VmHWM of /proc/PID/status).
func PeakRSS(pid int) (int64, error) { return procStatusBytes(pid, "VmHWM") }

func procStatusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read %s of pid %d: %w", field, pid, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, field+":") {
			fs := strings.Fields(line)
			if len(fs) < 2 {
				break
			}
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s of pid %d: %w", field, pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
