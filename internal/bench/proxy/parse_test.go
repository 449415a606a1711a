package main

import (
	"github.com/nib-lb/nib/internal/bench/benchkit"

	"strings"
	"testing"
)

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want wrkResult
		errs string
	}{
		{
			name: "clean",
			out: `Running 5s test @ http://127.0.0.1:18080/small
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.27ms  245.34us   6.46ms   89.91%
    Req/Sec    22.18k     1.01k   23.43k    86.00%
  110490 requests in 5.01s, 35.62MB read
Requests/sec:  22068.31
Transfer/sec:      7.11MB
`,
			want: wrkResult{Requests: 110490, Seconds: 5.01, BytesRead: 35.62 * (1 << 20), RPS: 22068.31},
		},
		{
			name: "errors",
			out: `Running 10s test @ http://127.0.0.1:18080/big
  1 threads and 50 connections
  6920 requests in 1.00m, 6.77GB read
  Socket errors: connect 3, read 7, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:   1375.01
Transfer/sec:      1.35GB
`,
			want: wrkResult{Requests: 6920, Seconds: 60, BytesRead: 6.77 * (1 << 30), RPS: 1375.01,
				ConnectErrs: 3, ReadErrs: 7, Timeouts: 12, Non2xx: 5},
			errs: "5 non-2xx/3xx, 3 connect errors, 7 read errors, 12 timeouts",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("parseWrk = %+v, want %+v", got, tc.want)
			}
			if e := got.errors(); e != tc.errs {
				t.Errorf("errors() = %q, want %q", e, tc.errs)
			}
		})
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:18080 Connection refused\n"); err == nil {
		t.Error("parseWrk accepted output without a summary")
	}
}

func TestParseStatCPU(t *testing.T) {
	// comm with a space and a parenthesis; utime 1234, stime 567.
	stat := "4242 (we(ird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 3 0 100 1000000 250 18446744073709551615\n"
	got, err := benchkit.ParseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1234+567 {
		t.Errorf("ParseStatCPU = %d, want %d", got, 1234+567)
	}
	if _, err := benchkit.ParseStatCPU("4242 (x) S 1 2"); err == nil {
		t.Error("ParseStatCPU accepted a short line")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\thaproxy\nVmPeak:\t   30000 kB\nVmRSS:\t   16068 kB\nThreads:\t1\n"
	got, err := benchkit.ParseVmRSS(strings.NewReader(status))
	if err != nil || got != 16068 {
		t.Errorf("ParseVmRSS = %d, %v; want 16068", got, err)
	}
	if _, err := benchkit.ParseVmRSS(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("ParseVmRSS accepted a status without VmRSS")
	}
}

func TestParseCPUStat(t *testing.T) {
	stat := "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 1 4 50 2 1 6 3 7 0\ncpu1 5 0 6 50 0 0 0 0 0 0\n"
	got, err := benchkit.ParseCPUStat(stat, "0")
	if err != nil {
		t.Fatal(err)
	}
	want := benchkit.CPUSample{Task: 5 + 1 + 4, IRQ: 1 + 6, Steal: 3, Total: 5 + 1 + 4 + 50 + 2 + 1 + 6 + 3}
	if got != want {
		t.Errorf("ParseCPUStat = %+v, want %+v", got, want)
	}
	if _, err := benchkit.ParseCPUStat(stat, "7"); err == nil {
		t.Error("ParseCPUStat found a missing CPU")
	}
}

func TestHaproxyMaxconn(t *testing.T) {
	for nofile, want := range map[uint64]int{20000: 9900, 1 << 20: 20000, 1024: 412, 10: 1} {
		if got := haproxyMaxconn(nofile, "off"); got != want {
			t.Errorf("haproxyMaxconn(%d) = %d, want %d", nofile, got, want)
		}
	}
	if got := haproxyMaxconn(20000, "always"); got != 9400 {
		t.Errorf("haproxyMaxconn(20000, splice) = %d, want 9400", got)
	}
}
