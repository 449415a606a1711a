package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Goals from DESIGN.md "Performance targets".
const (
	uploadVsPen    = 3.0  // upload ≥ 3× pen
	uploadVsDirect = 0.60 // and ≥ 60 % of direct
	retrVsPen      = 0.10 // retransmits ≤ 10 % of pen's
	framesVsPen    = 2.0  // 64-byte frames forwarded ≥ 2× pen at the full offered rate
	lossAtPenRate  = 0.001
	lossAtFullRate = 0.01 // issue 10: loss < 1 % at the generator's full rate
	cpuVsPen       = 0.4  // and the CPU per frame ≤ 0.4× pen's at one pace
	downloadRatio  = 0.95
	tarpitGoal     = 100e3
)

// val is a measured number, or why there is none.
type val struct {
	v    float64
	ok   bool
	text string // shown instead of v when !ok, or appended as note markers
}

type tableRow struct {
	title  string
	cells  [4]val // lbd, pen, direct, direct with pen's offloads
	prec   int
	target string
	judge  func(v float64) bool // nil: no verdict
}

func printTable(w io.Writer, e *env) {
	fmt.Fprintf(w, "lbd's DSR data path: %s (-dsr-path; LBD_DSR_PATH for lbd)\n", e.o.dsrPath)
	var notes []string
	note := func(s string) string {
		for i, n := range notes {
			if n == s {
				return fmt.Sprintf("[%d]", i+1)
			}
		}
		notes = append(notes, s)
		return fmt.Sprintf("[%d]", len(notes))
	}
	short := func(who string, err error) val {
		s := strings.Join(strings.Fields(err.Error()), " ")
		if len(s) > 24 {
			s = s[:24] + "…"
		}
		return val{text: "ERR " + s + " " + note(who+": "+err.Error())}
	}
	var lbd, pen *lbResult
	for _, r := range e.results {
		switch r.name {
		case "lbd":
			lbd = r
		case "pen":
			pen = r
		}
	}
	dReal, dPen := e.direct["realistic"], e.direct["pen"]
	none := val{text: "-"}

	// iperf cells.
	ip := func(who string, set *iperfSet, pick func(*iperfSet) iperfRes, f func(iperfRes) float64) val {
		if set == nil {
			return none
		}
		r := pick(set)
		if r.err != nil {
			return short(who, r.err)
		}
		v := val{v: f(r), ok: true}
		if r.noise != "" {
			v.text = " " + note(who+": "+r.noise+": noisy figure")
		}
		return v
	}
	lbSet := func(r *lbResult) *iperfSet {
		if r == nil {
			return nil
		}
		return &r.iperf
	}
	gbps := func(r iperfRes) float64 { return r.bps / 1e9 }
	retr := func(r iperfRes) float64 { return float64(r.retr) }
	up1 := func(s *iperfSet) iperfRes { return s.up1 }
	upN := func(s *iperfSet) iperfRes { return s.upN }
	down1 := func(s *iperfSet) iperfRes { return s.down1 }
	ratio := func(a, b val, scale float64) val {
		if !a.ok || !b.ok || b.v == 0 {
			return none
		}
		return val{v: scale * a.v / b.v, ok: true}
	}
	four := func(pick func(*iperfSet) iperfRes, f func(iperfRes) float64) [4]val {
		return [4]val{ip("lbd", lbSet(lbd), pick, f), ip("pen", lbSet(pen), pick, f), ip("direct", dReal, pick, f), ip("direct (pen's offloads)", dPen, pick, f)}
	}

	var rows []tableRow
	uploadRows := func(label string, pick func(*iperfSet) iperfRes) {
		bw := four(pick, gbps)
		rt := four(pick, retr)
		row := tableRow{title: label + ", Gbit/s", cells: bw, prec: 2}
		if bw[1].ok && bw[2].ok {
			goal := math.Max(uploadVsPen*bw[1].v, uploadVsDirect*bw[2].v)
			row.target = fmt.Sprintf("≥ %.2f (3× pen, 60%% of direct)", goal)
			row.judge = func(v float64) bool { return v >= goal }
		} else {
			row.target = "≥ 3× pen and ≥ 60% of direct"
		}
		rows = append(rows, row)
		row = tableRow{title: label + ", retransmits", cells: rt, prec: 0}
		if rt[1].ok {
			goal := retrVsPen * rt[1].v
			row.target = fmt.Sprintf("≤ %.0f (10%% of pen's)", goal)
			row.judge = func(v float64) bool { return v <= goal }
		}
		rows = append(rows, row)
		row = tableRow{title: label + ", % of direct", prec: 1, target: "≥ 60",
			judge: func(v float64) bool { return v >= 100*uploadVsDirect }}
		row.cells = [4]val{ratio(bw[0], bw[2], 100), ratio(bw[1], bw[3], 100), {v: 100, ok: bw[2].ok}, {v: 100, ok: bw[3].ok}}
		rows = append(rows, row)
	}
	uploadRows("upload 1 stream", up1)
	uploadRows(fmt.Sprintf("upload -P %d", e.o.streams), upN)
	dl := four(down1, gbps)
	rows = append(rows,
		tableRow{title: "download 1 stream (-R), Gbit/s", cells: dl, prec: 2},
		tableRow{title: "download, ratio of direct", prec: 3, target: "≥ 0.95",
			cells: [4]val{ratio(dl[0], dl[2], 1), ratio(dl[1], dl[3], 1), {v: 1, ok: dl[2].ok}, {v: 1, ok: dl[3].ok}},
			judge: func(v float64) bool { return v >= downloadRatio }})

	// UDP frame loads: 64-byte frames, then DNS-size datagrams.
	cell := func(r *lbResult, pick func(*lbResult) *frameRes, label string, f func(frameRes) float64) val {
		if r == nil {
			return none
		}
		m := pick(r)
		if m.err != nil {
			return short(r.name+" "+label, m.err)
		}
		if !m.measured {
			return none
		}
		v := val{v: f(*m), ok: true}
		if m.noise != "" {
			v.text = " " + note(r.name+" "+label+": "+m.noise+": noisy figure")
		}
		return v
	}
	offered := func(m frameRes) float64 { return m.offered / 1e6 }
	fwd := func(m frameRes) float64 { return m.fwdPPS / 1e6 }
	atLB := func(m frameRes) float64 { return float64(m.atLB) / m.secs / 1e6 }
	loss := func(m frameRes) float64 { return 100 * m.loss }
	lbcpu := func(m frameRes) float64 { return 100 * m.lbCPU }
	cpuAll := func(m frameRes) float64 { return 100 * m.cpuAll }
	perFrame := func(m frameRes) float64 { return 1e6 * m.cpuPerFrame }
	frameRows := func(label string, full, paced func(*lbResult) *frameRes, twicePen bool) {
		two := func(f func(frameRes) float64, pick func(*lbResult) *frameRes) [4]val {
			return [4]val{cell(lbd, pick, label, f), cell(pen, pick, label, f), none, none}
		}
		rows = append(rows, tableRow{title: label + " offered (full rate), Mpps", prec: 3, cells: two(offered, full)})
		fw := tableRow{title: label + " forwarded, Mpps", prec: 3, cells: two(fwd, full)}
		if twicePen {
			fw.target = "≥ 2× pen"
			if fw.cells[1].ok {
				goal := framesVsPen * fw.cells[1].v
				fw.target = fmt.Sprintf("≥ %.3f (2× pen)", goal)
				fw.judge = func(v float64) bool { return v >= goal }
			}
		}
		rows = append(rows, fw,
			tableRow{title: label + " loss at full rate, %", prec: 2, cells: two(loss, full), target: "< 1",
				judge: func(v float64) bool { return v < 100*lossAtFullRate }},
			tableRow{title: "  reached lb eth0, Mpps", prec: 3, cells: two(atLB, full)},
			tableRow{title: "  LB process CPU, %", prec: 0, cells: two(lbcpu, full)},
			tableRow{title: "  LB's CPU busy (all work on it, less idle), %", prec: 0, cells: two(cpuAll, full)},
			tableRow{title: "  LB's CPU per forwarded frame, µs", prec: 2, cells: two(perFrame, full)})
		if lbd == nil || pen == nil {
			return
		}
		l, p := paced(lbd), paced(pen)
		if !l.measured && l.err == nil && !p.measured && p.err == nil {
			return
		}
		title := label + " at one pace (both; pen's offloads), LB's CPU per frame, µs"
		if l.measured {
			title = fmt.Sprintf("%s at %.3f Mpps (both; pen's offloads), LB's CPU per frame, µs", label, l.rate/1e6)
		}
		row := tableRow{title: title, prec: 2, cells: two(perFrame, paced), target: fmt.Sprintf("≤ %g× pen", cpuVsPen)}
		if row.cells[1].ok {
			goal := cpuVsPen * row.cells[1].v
			row.target = fmt.Sprintf("≤ %.2f (%g× pen)", goal, cpuVsPen)
			row.judge = func(v float64) bool { return v <= goal }
		}
		rows = append(rows, row,
			tableRow{title: "  loss there, %", prec: 3, cells: two(loss, paced)},
			tableRow{title: "  LB's CPU busy there (all work, less idle), %", prec: 0, cells: two(cpuAll, paced)})
	}
	if slices.Contains(e.o.tests, "frames") {
		frameRows("64-byte", func(r *lbResult) *frameRes { return &r.frames }, func(r *lbResult) *frameRes { return &r.sharedPace }, true)
		if lbd != nil {
			atPen := func(r *lbResult) *frameRes { return &r.atPen }
			title := "lbd 64-byte loss at pen's forwarded rate, %"
			if lbd.atPen.measured {
				title = fmt.Sprintf("lbd 64-byte loss paced at %.3f Mpps, %%", lbd.atPen.rate/1e6)
			}
			row := tableRow{title: title, prec: 3, cells: [4]val{cell(lbd, atPen, "64-byte", loss), none, none, none}, target: "< 0.1",
				judge: func(v float64) bool { return v < 100*lossAtPenRate }}
			if lbd.atPen.targetNote != "" && row.cells[0].ok {
				row.cells[0].text += " " + note("pace: "+lbd.atPen.targetNote)
			}
			rows = append(rows, row,
				tableRow{title: "  offered there, Mpps", prec: 3, cells: [4]val{cell(lbd, atPen, "64-byte", offered), none, none, none}},
				tableRow{title: "  forwarded there, Mpps", prec: 3, cells: [4]val{cell(lbd, atPen, "64-byte", fwd), none, none, none}})
		}
	}
	if slices.Contains(e.o.tests, "dns") {
		frameRows(fmt.Sprintf("DNS-size (%d B UDP)", e.o.dnsSize), func(r *lbResult) *frameRes { return &r.dns }, func(r *lbResult) *frameRes { return &r.dnsShared }, false)
	}

	// Tarpit.
	tp := func(r *lbResult, f func(tarpitRes) float64) val {
		if r == nil {
			return none
		}
		if r.tarpit.err != nil {
			return short(r.name+" tarpit", r.tarpit.err)
		}
		if !r.tarpit.measured {
			return none
		}
		v := val{v: f(r.tarpit), ok: true}
		if r.tarpit.noise != "" {
			v.text = " " + note(r.name+" tarpit: "+r.tarpit.noise+": noisy figure")
		}
		return v
	}
	rows = append(rows,
		tableRow{title: "tarpit SYNs offered, /s", prec: 0, cells: [4]val{tp(lbd, func(t tarpitRes) float64 { return float64(t.sent) / t.secs }), tp(pen, func(t tarpitRes) float64 { return float64(t.sent) / t.secs }), none, none}},
		tableRow{title: "tarpit SYN+ACKs, /s", prec: 0, cells: [4]val{tp(lbd, func(t tarpitRes) float64 { return t.rate }), tp(pen, func(t tarpitRes) float64 { return t.rate }), none, none},
			target: "≥ 100000", judge: func(v float64) bool { return v >= tarpitGoal }},
		tableRow{title: "tarpit SYN+ACK checksums right, % of sample", prec: 1, cells: [4]val{tp(lbd, validShare), tp(pen, validShare), none, none},
			target: "100", judge: func(v float64) bool { return v == 100 }})

	format := func(c val, prec int) string {
		if !c.ok {
			return c.text
		}
		return strings.TrimSpace(fmt.Sprintf("%.*f%s", prec, c.v, c.text))
	}
	fmt.Fprintf(w, "\nnib DSR benchmark: namespaces %s (%s), LB pinned to CPU %s, iperf3/generators/backends on CPU %s, RPS steering %v\n",
		e.topo.Prefix(), e.topo, e.o.lbCPU, e.o.loadCPU, e.o.steer)
	fmt.Fprintf(w, "iperf3 -t %d; 64-byte and DNS-size (%d-byte UDP payload) loads %v (UDP to VIP:%s, source ports varied); tarpit loads %v (40-byte-header SYNs to %s:80 from %s)\n\n",
		int(e.o.duration.Seconds()), e.o.dnsSize, e.o.frameDur, framePort, e.o.tarpitDur, tarpitAddr, spoofAddr)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tlbd\tpen\tdirect\tdirect (pen's offloads)\ttarget (lbd)\tlbd verdict")
	for _, r := range rows {
		line := []string{r.title}
		for _, c := range r.cells {
			line = append(line, format(c, r.prec))
		}
		verdict := ""
		if r.judge != nil {
			switch {
			case lbd == nil:
				verdict = "n/a (lbd not run)"
			case !r.cells[0].ok:
				verdict = "n/a (no figure)"
			case r.judge(r.cells[0].v):
				verdict = "met"
			default:
				verdict = "NOT met"
			}
		}
		line = append(line, r.target, verdict)
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range e.results {
		fmt.Fprintf(w, "%s command lines (in namespace %s):\n", r.name, e.lbHost().NS())
		for _, c := range r.cmdlines {
			fmt.Fprintf(w, "  %s\n", c)
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	if dReal != nil {
		fmt.Fprintf(w, "direct: offloads %s\n", dReal.offload)
	}
	if dPen != nil {
		fmt.Fprintf(w, "direct (pen's offloads): offloads %s\n", dPen.offload)
	}
	for _, n := range e.notes {
		fmt.Fprintln(w, n)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for i, n := range notes {
			fmt.Fprintf(w, "[%d] %s\n", i+1, n)
		}
	}
	fmt.Fprintln(w)
}

func validShare(t tarpitRes) float64 {
	if t.sample == 0 {
		return 0
	}
	return 100 * float64(t.valid) / float64(t.sample)
}
