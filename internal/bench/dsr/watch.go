package main

import (
	"github.com/nib-lb/nib/internal/bench/benchkit"

	"fmt"
	"strings"
)

// foreignWarn: above this share of a CPU used by processes other than the
// benchmark's own (or stolen by the hypervisor), a figure is flagged noisy.
const foreignWarn = 0.15

// cpuWatch samples both CPUs and the benchmark's own processes around one
// measurement, to tell how much of each CPU other processes took.
type cpuWatch struct {
	e        *env
	lb       *benchkit.Child
	lbT0     int64
	srvT0    int64
	soft0    map[string]int64
	s0       map[string]benchkit.CPUSample
	ok       bool
	softPids map[string]int
}

func (e *env) watch(lb *benchkit.Child) *cpuWatch {
	w := &cpuWatch{e: e, lb: lb, soft0: map[string]int64{}, s0: map[string]benchkit.CPUSample{}, softPids: map[string]int{}, ok: true}
	if lb != nil {
		t, err := benchkit.CPUTicks(lb.PID())
		w.lbT0, w.ok = t, err == nil
	}
	w.srvT0 = e.serverTicks()
	for _, cpu := range []string{e.o.lbCPU, e.o.loadCPU} {
		s, err := benchkit.ReadCPU(cpu)
		if err != nil {
			w.ok = false
		}
		w.s0[cpu] = s
		if pid := ksoftirqd(cpu); pid > 0 {
			w.softPids[cpu] = pid
			w.soft0[cpu], _ = benchkit.CPUTicks(pid)
		}
	}
	return w
}

// serverTicks is the CPU time of the iperf3 servers.
func (e *env) serverTicks() int64 {
	var n int64
	for _, c := range e.servers {
		t, _ := benchkit.CPUTicks(c.PID())
		n += t
	}
	return n
}

// done returns a description of the foreign CPU use ("" when below
// foreignWarn on both CPUs) and the share of its CPU the LB process used.
// loadTicks is the CPU time of the (exited) load generator.
func (w *cpuWatch) done(loadTicks int64) (noise string, lbShare float64) {
	if !w.ok {
		return "", 0
	}
	e := w.e
	var lbTicks int64
	if w.lb != nil {
		t, err := benchkit.CPUTicks(w.lb.PID())
		if err == nil {
			lbTicks = t - w.lbT0
		}
	}
	ours := map[string]int64{}
	ours[e.o.lbCPU] += lbTicks
	ours[e.o.loadCPU] += loadTicks + e.serverTicks() - w.srvT0
	var notes []string
	for _, cpu := range []string{e.o.lbCPU, e.o.loadCPU} {
		s1, err := benchkit.ReadCPU(cpu)
		if err != nil {
			return "", 0
		}
		s0 := w.s0[cpu]
		total := s1.Total - s0.Total
		if total <= 0 {
			continue
		}
		if pid := w.softPids[cpu]; pid > 0 {
			if t, err := benchkit.CPUTicks(pid); err == nil {
				ours[cpu] += t - w.soft0[cpu] // receive work done for us
			}
		}
		if cpu == e.o.lbCPU && w.lb != nil {
			lbShare = float64(lbTicks) / float64(total)
		}
		foreign := float64(s1.Task-s0.Task+s1.Steal-s0.Steal-ours[cpu]) / float64(total)
		if foreign > foreignWarn {
			role := "load"
			if cpu == e.o.lbCPU {
				role = "LB"
			}
			notes = append(notes, fmt.Sprintf("other processes (or the hypervisor) took %.0f%% of CPU %s (%s CPU)", 100*foreign, cpu, role))
		}
		if e.o.lbCPU == e.o.loadCPU {
			break
		}
	}
	return strings.Join(notes, "; "), lbShare
}
