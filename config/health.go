package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// HealthCheck is the kind of a service's active health check.
type HealthCheck int

// Health check kinds.
const (
	// CheckNone runs no active checks (Pen's behaviour): backends are
	// only skipped for Blacklist after a failed connect.
	CheckNone HealthCheck = iota
	// CheckTCP is a TCP connect.
	CheckTCP
	// CheckHTTP is a GET of Path: the status and body are checked.
	CheckHTTP
	// CheckHTTPS is CheckHTTP over TLS (the certificate is not verified).
	CheckHTTPS
	// CheckDNS is a query (type A) for Query over the service's protocol.
	CheckDNS
)

// healthCheckNames are the spellings of HealthCheck in the file.
var healthCheckNames = []string{CheckNone: "none", CheckTCP: "tcp", CheckHTTP: "http", CheckHTTPS: "https", CheckDNS: "dns"}

// String returns the check as written in the file, e.g. "http".
func (c HealthCheck) String() string { return enumString(healthCheckNames, int(c), "HealthCheck") }

// Health configures a service's active health checks ([service.health]).
// NewHealth returns the defaults. With Check CheckNone nothing is checked
// and the other fields are kept but unused.
type Health struct {
	// Check is the kind of check; CheckNone (the default) runs none.
	Check HealthCheck
	// Interval is the time between two checks of one backend; default 5s;
	// 100ms to 1h.
	Interval time.Duration
	// Timeout is one check's limit; default 2s; 10ms to Interval.
	Timeout time.Duration
	// Rise is the number of consecutive successes that bring a down
	// backend up; default 2; 1 to 100.
	Rise int
	// Fall is the number of consecutive failures that take an up backend
	// down; default 3; 1 to 100.
	Fall int
	// Port is the port checks connect to; 0 is the backend's port (proxy)
	// or the service's port (DSR). A DSR service for every port (listen
	// port 0) needs it for any check.
	Port uint16
	// Path is the http(s) request path; default "/"; it starts with "/",
	// printable ASCII without spaces, at most 1024 bytes.
	Path string
	// Host is the http(s) Host header; "" (the default) is the backend's
	// address; printable ASCII without spaces, at most 255 bytes.
	Host string
	// ExpectStatus are the http(s) status codes accepted; default
	// 200-399; codes 100 to 599, Lo <= Hi. Written "200" or "200-299".
	ExpectStatus StatusRange
	// ExpectBody is a substring that the response body (its first 64 KiB)
	// must contain, http(s); "" (the default) none; at most 1024 bytes.
	ExpectBody string
	// Query is the name a "dns" check queries (type A); required with
	// CheckDNS; a DNS name such as "example.com." ("." allowed).
	Query string
	// VIP adds, with mode "dsr" and protocol "tcp" only, a SYN to
	// VIP:port sent to the backend's MAC address that must get a SYN+ACK:
	// proof that the backend accepts the VIP's traffic.
	VIP bool
	// FailClosed makes a service whose backends are all down use none of
	// them (the emergency server if any) instead of all (fail open).
	FailClosed bool
	// StartDown makes a new backend start down until it passes Rise
	// checks; by default it starts up.
	StartDown bool
}

// StatusRange is a range of HTTP status codes, Lo to Hi inclusive.
type StatusRange struct{ Lo, Hi int }

// String returns the range as written in the file: "200" or "200-299".
func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// Limits of [service.health] checked by Validate.
const (
	minHealthInterval = 100 * time.Millisecond
	maxHealthInterval = time.Hour
	minHealthTimeout  = 10 * time.Millisecond
	maxHealthCount    = 100 // rise and fall
	maxHealthPath     = 1024
	maxHealthHost     = 255
	maxHealthBody     = 1024
	maxDNSName        = 253
	maxDNSLabel       = 63
)

// rawHealth is [service.health].
type rawHealth struct {
	Check        *string `toml:"check,omitempty"`
	Interval     *string `toml:"interval,omitempty"`
	Timeout      *string `toml:"timeout,omitempty"`
	Rise         *int    `toml:"rise,omitempty"`
	Fall         *int    `toml:"fall,omitempty"`
	Port         *int    `toml:"port,omitempty"`
	Path         *string `toml:"path,omitempty"`
	Host         string  `toml:"host,omitempty"`
	ExpectStatus any     `toml:"expect_status,omitempty"` // 200, "200" or "200-299"
	ExpectBody   string  `toml:"expect_body,omitempty"`
	Query        string  `toml:"query,omitempty"`
	VIP          bool    `toml:"vip,omitempty"`
	FailClosed   bool    `toml:"fail_closed,omitempty"`
	StartDown    bool    `toml:"start_down,omitempty"`
}

// health converts [service.health], starting from NewHealth's defaults.
func (rh *rawHealth) health(errs *errList, key string) Health {
	h := NewHealth()
	if rh.Check != nil {
		h.Check = HealthCheck(parseName(errs, key+".check", *rh.Check, healthCheckNames))
	}
	parseDuration(errs, key+".interval", rh.Interval, &h.Interval)
	parseDuration(errs, key+".timeout", rh.Timeout, &h.Timeout)
	if rh.Rise != nil {
		h.Rise = *rh.Rise
	}
	if rh.Fall != nil {
		h.Fall = *rh.Fall
	}
	if rh.Port != nil {
		// Port 0 is "not given", so a 0 written in the file is refused
		// here, where it can still be told apart.
		if p := *rh.Port; p < 1 || p > 65535 {
			errs.add(key+".port", "%d must be between 1 and 65535 (leave port out to check the port traffic goes to)", p)
		} else {
			h.Port = uint16(p)
		}
	}
	if rh.Path != nil {
		h.Path = *rh.Path
	}
	h.Host = rh.Host
	if rh.ExpectStatus != nil {
		if r, ok := parseStatusRange(rh.ExpectStatus); ok {
			h.ExpectStatus = r
		} else {
			errs.add(key+".expect_status", "%s is not a status code such as 200 or \"200\", or a range such as \"200-299\"", tomlValue(rh.ExpectStatus))
		}
	}
	h.ExpectBody = rh.ExpectBody
	h.Query = rh.Query
	h.VIP = rh.VIP
	h.FailClosed = rh.FailClosed
	h.StartDown = rh.StartDown
	return h
}

// parseStatusRange converts expect_status: an integer, or a string of one
// code or a range "LO-HI", each of 1 to 3 digits. Validate checks the
// codes.
func parseStatusRange(v any) (StatusRange, bool) {
	switch x := v.(type) {
	case int64:
		if x < 0 || x > 999 {
			return StatusRange{}, false
		}
		return StatusRange{int(x), int(x)}, true
	case string:
		lo, hi, isRange := strings.Cut(x, "-")
		if !isRange {
			hi = lo
		}
		l, ok1 := statusCode(lo)
		h, ok2 := statusCode(hi)
		return StatusRange{l, h}, ok1 && ok2
	}
	return StatusRange{}, false
}

// statusCode parses 1 to 3 decimal digits.
func statusCode(s string) (int, bool) {
	if len(s) < 1 || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// tomlValue formats a decoded TOML value of unknown type for a message.
func tomlValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int64, float64, bool:
		return fmt.Sprint(x)
	}
	return fmt.Sprintf("a TOML %T", v)
}

// rawHealthOf is the [service.health] table Marshal writes: nil when h is
// NewHealth(), else the keys whose values differ from the defaults.
func rawHealthOf(errs *errList, key string, h *Health) *rawHealth {
	def := NewHealth()
	if *h == def {
		return nil
	}
	rh := &rawHealth{
		Host:       h.Host,
		ExpectBody: h.ExpectBody,
		Query:      h.Query,
		VIP:        h.VIP,
		FailClosed: h.FailClosed,
		StartDown:  h.StartDown,
	}
	if h.Check != def.Check {
		rh.Check = ptr(enumValue(errs, key+".check", healthCheckNames, int(h.Check)))
	}
	rh.Interval = durationUnlessDefault(h.Interval, def.Interval)
	rh.Timeout = durationUnlessDefault(h.Timeout, def.Timeout)
	rh.Rise = unlessDefault(h.Rise, def.Rise)
	rh.Fall = unlessDefault(h.Fall, def.Fall)
	if h.Port != 0 {
		rh.Port = ptr(int(h.Port))
	}
	rh.Path = unlessDefault(h.Path, def.Path)
	if h.ExpectStatus != def.ExpectStatus {
		rh.ExpectStatus = h.ExpectStatus.String()
	}
	return rh
}

// health checks a service's [service.health]. Every value is checked for
// its own range and syntax whatever the check; with check "none" the
// values are kept but not checked against a kind of check or the service
// (an operator may switch a table off and on again), except vip, which
// belongs to DSR services only.
func (v *validator) health(key string, s *Service) {
	h := &s.Health
	name, known := enumName(healthCheckNames, int(h.Check))
	if !known {
		v.add(key+".check", "unknown check %d", h.Check)
	}

	intervalOK := h.Interval >= minHealthInterval && h.Interval <= maxHealthInterval
	if !intervalOK {
		v.add(key+".interval", "%s must be between %s and %s", h.Interval, minHealthInterval, maxHealthInterval)
	}
	switch {
	case intervalOK && (h.Timeout < minHealthTimeout || h.Timeout > h.Interval):
		v.add(key+".timeout", "%s must be between %s and interval (%s)", h.Timeout, minHealthTimeout, h.Interval)
	case !intervalOK && (h.Timeout < minHealthTimeout || h.Timeout > maxHealthInterval):
		v.add(key+".timeout", "%s must be between %s and %s", h.Timeout, minHealthTimeout, maxHealthInterval)
	}
	v.intRange(key+".rise", h.Rise, 1, maxHealthCount)
	v.intRange(key+".fall", h.Fall, 1, maxHealthCount)
	switch {
	case !strings.HasPrefix(h.Path, "/"):
		v.add(key+".path", "%q must start with \"/\"", h.Path)
	case len(h.Path) > maxHealthPath:
		v.add(key+".path", "is %d bytes long; at most %d are allowed", len(h.Path), maxHealthPath)
	case !printableNoSpace(h.Path):
		v.add(key+".path", "%q may only contain printable ASCII without spaces (percent-encode the rest, e.g. %%20)", h.Path)
	}
	switch {
	case len(h.Host) > maxHealthHost:
		v.add(key+".host", "is %d bytes long; at most %d are allowed", len(h.Host), maxHealthHost)
	case !printableNoSpace(h.Host):
		v.add(key+".host", "%q may only contain printable ASCII without spaces", h.Host)
	}
	r := h.ExpectStatus
	switch {
	case r.Lo < 100 || r.Lo > 599 || r.Hi < 100 || r.Hi > 599:
		v.add(key+".expect_status", "%q: status codes must be between 100 and 599", r.String())
	case r.Lo > r.Hi:
		v.add(key+".expect_status", "%q is an empty range: write the lower code first", r.String())
	}
	if len(h.ExpectBody) > maxHealthBody {
		v.add(key+".expect_body", "is %d bytes long; at most %d are allowed", len(h.ExpectBody), maxHealthBody)
	}
	if h.Query != "" && !validDNSName(h.Query) {
		v.add(key+".query", "%q is not a DNS name such as \"example.com.\" (labels of 1 to 63 letters, digits, '-' or '_'; \".\" is the root)", h.Query)
	}
	if h.VIP && (s.Mode != ModeDSR || s.Protocol != TCP) {
		v.add(key+".vip", "the VIP check sends a TCP SYN to the VIP through a backend's MAC address: it needs mode \"dsr\" and protocol \"tcp\"")
	}
	if !known || h.Check == CheckNone {
		return
	}

	// What only makes sense with some kinds of check.
	switch h.Check {
	case CheckTCP, CheckDNS:
		def := NewHealth()
		httpOnly := func(set bool, k string) {
			if set {
				v.add(key+"."+k, "is only used by check \"http\" and \"https\" (check is %q)", name)
			}
		}
		httpOnly(h.Path != def.Path, "path")
		httpOnly(h.Host != def.Host, "host")
		httpOnly(h.ExpectStatus != def.ExpectStatus, "expect_status")
		httpOnly(h.ExpectBody != def.ExpectBody, "expect_body")
	}
	switch {
	case h.Check == CheckDNS && h.Query == "":
		v.add(key+".query", "check \"dns\" needs the name to query, e.g. \"example.com.\"")
	case h.Check != CheckDNS && h.Query != "":
		v.add(key+".query", "is only used by check \"dns\" (check is %q)", name)
	}
	if s.Protocol == UDP && h.Check != CheckDNS {
		v.add(key+".check", "%q needs protocol \"tcp\"; a udp service can use check \"dns\" (or \"none\")", name)
	}
	if s.Mode == ModeDSR && s.Listen.IsValid() && s.Listen.Port() == 0 && h.Port == 0 {
		v.add(key+".port", "the service forwards every port (listen %q): give the port to check", formatVIP(s.Listen))
	}
}

// printableNoSpace reports whether s is printable ASCII without spaces.
func printableNoSpace(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validDNSName reports whether s is a DNS name of letters, digits, '-' and
// '_' with an optional final dot, or "." (the root).
func validDNSName(s string) bool {
	if s == "." {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > maxDNSName {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > maxDNSLabel {
			return false
		}
		for i := range len(label) {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
