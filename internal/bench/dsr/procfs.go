package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// cpuTicks returns utime+stime of process pid (all its threads), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU extracts utime (field 14) + stime (field 15) from a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat string) (int64, error) {
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

// clockTicks returns sysconf(_SC_CLK_TCK) as reported by getconf, or 100 (the
// value on every Linux architecture Go supports) if getconf is unavailable.
func clockTicks() (int64, string) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n, "getconf CLK_TCK"
		}
	}
	return 100, "default"
}

// cpuSample is one CPU's cumulative times from /proc/stat, in clock ticks.
type cpuSample struct {
	task  int64 // user + nice + system: time charged to tasks
	irq   int64 // irq + softirq (not charged to any task)
	steal int64 // taken by the hypervisor
	total int64
}

// readCPU samples one CPU ("0") from /proc/stat.
func readCPU(cpu string) (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, err
	}
	return parseCPUStat(string(b), cpu)
}

func parseCPUStat(stat, cpu string) (cpuSample, error) {
	var s cpuSample
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
			s.total += n
		}
		s.task = v[0] + v[1] + v[2]
		s.irq = v[5] + v[6]
		s.steal = v[7]
		return s, nil
	}
	return s, fmt.Errorf("/proc/stat has no cpu%s line", cpu)
}

// ksoftirqd returns the pid of ksoftirqd/cpu, or 0.
func ksoftirqd(cpu string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == "ksoftirqd/"+cpu {
			return pid
		}
	}
	return 0
}

// softnetDrops sums the second column of /proc/net/softnet_stat: frames
// dropped because a CPU's backlog queue was full (all namespaces).
func softnetDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 16, 64)
			n += v
		}
	}
	return n
}
