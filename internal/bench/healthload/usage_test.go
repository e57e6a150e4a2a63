package healthload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// usage is a sample of the resources spent so far by this process, by the
// server process and by the whole machine.
type usage struct {
	wall      time.Time
	cpu       time.Duration // this process, user + system (getrusage RUSAGE_SELF)
	serverCPU time.Duration // the server process, from /proc/PID/stat
	hostBusy  time.Duration // all CPUs, not idle, from /proc/stat
	allocB    uint64        // bytes allocated on the Go heap so far
	allocN    uint64        // heap objects allocated so far
}

// meter reads the /proc files the measurement needs through descriptors
// opened before the checker starts, so that a checker which runs out of
// file descriptors under overload cannot stop it from being measured.
type meter struct {
	hostStat   *os.File // /proc/stat
	serverStat *os.File // /proc/PID/stat of the server process
	selfStatus *os.File // /proc/self/status
	selfFDs    *os.File // /proc/self/fd
}

func openMeter(tb testing.TB, serverPID int) *meter {
	tb.Helper()
	var m meter
	var errs []error
	open := func(name string) *os.File {
		f, err := os.Open(name)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		tb.Cleanup(func() { _ = f.Close() })
		return f
	}
	m.hostStat = open("/proc/stat")
	m.serverStat = open("/proc/" + strconv.Itoa(serverPID) + "/stat")
	m.selfStatus = open("/proc/self/status")
	m.selfFDs = open("/proc/self/fd")
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return &m
}

// reread returns the current content of the /proc file f.
func reread(f *os.File) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func (m *meter) sample() (usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}, fmt.Errorf("getrusage: %w", err)
	}
	u := usage{
		wall: time.Now(),
		cpu:  time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
	}
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	u.allocB, u.allocN = s[0].Value.Uint64(), s[1].Value.Uint64()
	var err error
	if u.serverCPU, err = m.serverCPU(); err != nil {
		return u, err
	}
	u.hostBusy, err = m.hostBusy()
	return u, err
}

// clockTick is USER_HZ, the unit of /proc times; 100 on Linux.
const clockTick = 10 * time.Millisecond

// serverCPU is the user + system time of the server process.
func (m *meter) serverCPU() (time.Duration, error) {
	b, err := reread(m.serverStat)
	if err != nil {
		return 0, fmt.Errorf("server process stat: %w", err)
	}
	return parseProcessCPU(b)
}

// parseProcessCPU reads utime + stime from the content of /proc/PID/stat.
func parseProcessCPU(b []byte) (time.Duration, error) {
	// The command name is in parentheses and may hold spaces: fields count
	// from after its closing one, where field 3 (state) comes first.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/PID/stat: bad utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// hostBusy is the CPU time all processors spent on anything but idling
// (user, nice, system, irq, softirq and time stolen by the hypervisor).
func (m *meter) hostBusy() (time.Duration, error) {
	b, err := reread(m.hostStat)
	if err != nil {
		return 0, fmt.Errorf("/proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system - - irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d: %w", i, err)
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// residentBytes is this process's VmRSS.
func (m *meter) residentBytes() (int64, error) {
	b, err := reread(m.selfStatus)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/status: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		kb, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %w", kb, err)
		}
		return n << 10, nil
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// openFiles counts this process's open file descriptors.
func (m *meter) openFiles() (int, error) {
	if _, err := m.selfFDs.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	names, err := m.selfFDs.Readdirnames(-1)
	return len(names), err
}

// liveHeapBytes is the Go heap still reachable at the last GC.
func liveHeapBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
