package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Goals from DESIGN.md "Performance targets".
const (
	cpuGoalFactor = 0.9 // lbd CPU per request ≤ 0.9 × the best of pen and haproxy
	rssGoalKB     = 3.3 // lbd RSS per idle proxied connection ≤ 3.3 KB (haproxy's)

	// Above this share of foreign work on the proxy CPU a figure is flagged.
	foreignWarn = 0.15
)

// cell is one table entry: a number, or text when there is none.
type cell struct {
	v    float64
	ok   bool
	text string
}

func printTable(w io.Writer, e *env, results []*result) {
	byName := map[string]*result{}
	for _, r := range results {
		byName[r.name] = r
	}
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
	short := func(err error) string {
		s := strings.Join(strings.Fields(err.Error()), " ")
		if len(s) > 28 {
			s = s[:28] + "…"
		}
		return "ERR " + s
	}

	// get returns the cell of proxy name for the row.
	type rowKind struct {
		title string
		get   func(r *result) cell
		goal  string // "cpu", "rss" or ""
		prec  int
	}
	loadCell := func(key string, rps bool) func(r *result) cell {
		return func(r *result) cell {
			if r.startErr != nil {
				return cell{text: short(r.startErr) + " " + note(r.name+": "+r.startErr.Error())}
			}
			m := r.loads[key]
			if m == nil {
				return cell{text: "-"}
			}
			if m.err != nil {
				return cell{text: short(m.err) + " " + note(r.name+" "+key+": "+m.err.Error())}
			}
			c := cell{v: m.usReq, ok: true}
			if rps {
				c.v = m.wrk.RPS
			}
			var flags []string
			if m.wrkErrs != "" {
				flags = append(flags, r.name+" "+key+": wrk reported errors: "+m.wrkErrs)
			}
			if m.short != "" {
				flags = append(flags, r.name+" "+key+": "+m.short)
			}
			if m.foreign > foreignWarn {
				flags = append(flags, fmt.Sprintf("%s %s: other processes (or the hypervisor) took %.0f%% of the proxy CPU: noisy figure",
					r.name, key, 100*m.foreign))
			}
			for _, f := range flags {
				c.text += " " + note(f)
			}
			return c
		}
	}
	rows := []rowKind{
		{"keepalive: CPU µs/req", loadCell("keepalive", false), "cpu", 2},
		{"conn-per-request: CPU µs/req", loadCell("close", false), "cpu", 2},
		{"1 MB object: CPU µs/req", loadCell("big", false), "cpu", 1},
		{"keepalive: req/s", loadCell("keepalive", true), "", 0},
		{"conn-per-request: req/s", loadCell("close", true), "", 0},
		{"1 MB object: req/s", loadCell("big", true), "", 0},
	}
	if e.o.idle > 0 {
		rows = append(rows, rowKind{fmt.Sprintf("RSS KB/idle conn (%d conns)", e.o.idle), func(r *result) cell {
			if r.startErr != nil {
				return cell{text: short(r.startErr) + " " + note(r.name+": "+r.startErr.Error())}
			}
			if r.idleErr != nil {
				return cell{text: short(r.idleErr) + " " + note(r.name+" idle: "+r.idleErr.Error())}
			}
			c := cell{v: r.rssPerConn, ok: true}
			for _, n := range r.notes {
				c.text += " " + note(r.name+" "+n)
			}
			return c
		}, "rss", 2})
		rss := func(after bool) func(r *result) cell {
			return func(r *result) cell {
				if r.startErr != nil || r.idleErr != nil {
					return cell{text: "-"}
				}
				if after {
					return cell{v: float64(r.rssAfter), ok: true}
				}
				return cell{v: float64(r.rssBefore), ok: true}
			}
		}
		rows = append(rows,
			rowKind{"RSS KB with 0 conns (warmed up)", rss(false), "", 0},
			rowKind{fmt.Sprintf("RSS KB with %d idle conns", e.o.idle), rss(true), "", 0})
	}

	format := func(c cell, prec int) string {
		if !c.ok {
			return c.text
		}
		return strings.TrimSpace(fmt.Sprintf("%.*f%s", prec, c.v, c.text))
	}

	fmt.Fprintf(w, "\nnib proxy benchmark: wrk -t1 -c%d -d%v on 127.0.0.1, proxy on CPU %s, wrk+nginx on CPU %s, CLK_TCK %d\n\n",
		e.o.conns, e.o.duration, e.o.proxyCPU, e.o.loadCPU, e.clk)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"metric"}
	for _, name := range allProxies {
		if byName[name] != nil {
			header = append(header, name)
		}
	}
	header = append(header, "target (lbd)", "lbd verdict")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		line := []string{row.title}
		for _, name := range allProxies {
			if r := byName[name]; r != nil {
				line = append(line, format(row.get(r), row.prec))
			}
		}
		target, verdict := "", ""
		var lbd cell
		if r := byName["lbd"]; r != nil {
			lbd = row.get(r)
		}
		switch row.goal {
		case "cpu":
			best, from := math.Inf(1), ""
			for _, ref := range []string{"pen", "haproxy"} {
				if r := byName[ref]; r != nil {
					if c := row.get(r); c.ok && c.v < best {
						best, from = c.v, ref
					}
				}
			}
			if from == "" {
				target, verdict = "≤ 0.9× best of pen, haproxy", "n/a (no reference measured)"
				break
			}
			goal := cpuGoalFactor * best
			target = fmt.Sprintf("≤ %.*f (0.9× %s)", row.prec, goal, from)
			verdict = judge(lbd, byName["lbd"] != nil, goal)
		case "rss":
			target = fmt.Sprintf("≤ %.1f", rssGoalKB)
			verdict = judge(lbd, byName["lbd"] != nil, rssGoalKB)
		}
		fmt.Fprintln(tw, strings.Join(append(line, target, verdict), "\t"))
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for i, n := range notes {
			fmt.Fprintf(w, "[%d] %s\n", i+1, n)
		}
	}
	fmt.Fprintln(w)
}

func judge(lbd cell, measured bool, goal float64) string {
	switch {
	case !measured:
		return "n/a (lbd not run)"
	case !lbd.ok:
		return "n/a (lbd failed)"
	case lbd.v <= goal:
		return "met"
	default:
		return "NOT met"
	}
}
