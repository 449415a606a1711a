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
