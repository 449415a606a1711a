package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// wrkResult is what one wrk run reported.
type wrkResult struct {
	Requests    int64   // "N requests in ..."
	Seconds     float64 // the run's duration as wrk measured it
	BytesRead   float64 // "..., X.YMB read" (wrk rounds it)
	RPS         float64 // "Requests/sec:"
	ConnectErrs int64   // "Socket errors: connect A, read B, write C, timeout D"
	ReadErrs    int64
	WriteErrs   int64
	Timeouts    int64
	Non2xx      int64 // "Non-2xx or 3xx responses: N"
}

var (
	reRequests = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGTP]?B) read`)
	reSockErrs = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
)

// parseWrk parses wrk 4.x's text output.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := reRequests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output has no 'requests in' line: %q", strings.TrimSpace(out))
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, _ := strconv.ParseFloat(m[2], 64)
	r.Seconds = d * map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m[3]]
	b, _ := strconv.ParseFloat(m[4], 64)
	r.BytesRead = b * map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}[m[5]]
	m = reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output has no 'Requests/sec' line")
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reSockErrs.FindStringSubmatch(out); m != nil {
		r.ConnectErrs, _ = strconv.ParseInt(m[1], 10, 64)
		r.ReadErrs, _ = strconv.ParseInt(m[2], 10, 64)
		r.WriteErrs, _ = strconv.ParseInt(m[3], 10, 64)
		r.Timeouts, _ = strconv.ParseInt(m[4], 10, 64)
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// errors summarises what wrk counted as failed; "" when nothing failed.
func (r wrkResult) errors() string {
	var parts []string
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Non2xx, "non-2xx/3xx")
	add(r.ConnectErrs, "connect errors")
	add(r.ReadErrs, "read errors")
	add(r.WriteErrs, "write errors")
	add(r.Timeouts, "timeouts")
	return strings.Join(parts, ", ")
}
