package benchkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// CPUTicks returns utime+stime of process pid (all its threads), in clock ticks.
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseStatCPU(string(b))
}

// ParseStatCPU extracts utime (field 14) + stime (field 15) from a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields after comm", len(f))
	}
	utime, err := strconv.ParseInt(f[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %v", err)
	}
	stime, err := strconv.ParseInt(f[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %v", err)
	}
	return utime + stime, nil
}

// RSSKB returns VmRSS of process pid in KiB.
func RSSKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseVmRSS(f)
}

func ParseVmRSS(f io.Reader) (int64, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fs := strings.Fields(strings.TrimPrefix(line, "VmRSS:"))
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		return strconv.ParseInt(fs[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// FDCount returns the number of open file descriptors of process pid.
func FDCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// ProcComm returns the command name of process pid.
func ProcComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// NofileLimit returns the soft RLIMIT_NOFILE of process pid, from /proc/PID/limits.
func NofileLimit(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			fs := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(fs) >= 1 {
				return strconv.ParseInt(fs[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no 'Max open files' line")
}

// ClockTicks returns sysconf(_SC_CLK_TCK) as reported by getconf, or 100 (the
// value on every Linux architecture Go supports) if getconf is unavailable.
func ClockTicks() (int64, string) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n, "getconf CLK_TCK"
		}
	}
	return 100, "default"
}

// CPUSample is one CPU's cumulative times from /proc/stat, in clock ticks.
type CPUSample struct {
	Task  int64 // user + nice + system: time charged to tasks
	IRQ   int64 // irq + softirq (not charged to any task)
	Steal int64 // taken by the hypervisor
	Total int64
}

// ReadCPU samples one CPU ("0") from /proc/stat.
func ReadCPU(cpu string) (CPUSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUSample{}, err
	}
	return ParseCPUStat(string(b), cpu)
}

func ParseCPUStat(stat, cpu string) (CPUSample, error) {
	var s CPUSample
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != "cpu"+cpu {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is already included in user and nice.
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(f[1+i], 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/stat cpu%s: %v", cpu, err)
			}
			v[i] = n
			s.Total += n
		}
		s.Task = v[0] + v[1] + v[2]
		s.IRQ = v[5] + v[6]
		s.Steal = v[7]
		return s, nil
	}
	return s, fmt.Errorf("/proc/stat has no cpu%s line", cpu)
}
