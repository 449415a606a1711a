package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

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

// cpuTicks returns the busy and total clock ticks of one CPU from
// /proc/stat: busy is everything but idle and iowait, so it counts the
// LB's process, the kernel's softirq work (receive, XDP, forwarding) and
// anything else that ran there.
func cpuTicks(cpu string) (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "cpu"+cpu {
			continue
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/stat %s: %q", f[0], v)
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, nil
	}
	return 0, 0, fmt.Errorf("/proc/stat: no line for cpu%s", cpu)
}
