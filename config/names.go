package config

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// The spellings of enumerated values in the file, indexed by value.
var (
	protocolNames      = []string{TCP: "tcp", UDP: "udp"}
	modeNames          = []string{ModeProxy: "proxy", ModeDSR: "dsr"}
	algorithmNames     = []string{RoundRobin: "roundrobin", Hash: "hash", Weight: "weight", Prio: "prio", Maglev: "maglev"}
	proxyProtocolNames = []string{ProxyNone: "", ProxyV1: "v1", ProxyV2: "v2"}
	clientAuthNames    = []string{ClientAuthNone: "none", ClientAuthRequest: "request", ClientAuthRequire: "require"}
	tlsVersionNames    = map[uint16]string{tls.VersionTLS12: "1.2", tls.VersionTLS13: "1.3"}
)

func enumName(names []string, v int) (string, bool) {
	if v < 0 || v >= len(names) {
		return "", false
	}
	return names[v], true
}

func enumString(names []string, v int, typ string) string {
	if s, ok := enumName(names, v); ok {
		return s
	}
	return fmt.Sprintf("%s(%d)", typ, v)
}

// parseEnum returns the index of s in names.
func parseEnum(names []string, s string) (int, bool) {
	for i, n := range names {
		if n == s {
			return i, true
		}
	}
	return 0, false
}

// quoteList formats names for "must be one of" messages.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// String returns the protocol as written in the file: "tcp" or "udp".
func (p Protocol) String() string { return enumString(protocolNames, int(p), "Protocol") }

// String returns the mode as written in the file: "proxy" or "dsr".
func (m Mode) String() string { return enumString(modeNames, int(m), "Mode") }

// String returns the algorithm as written in the file, e.g. "roundrobin".
func (a Algorithm) String() string { return enumString(algorithmNames, int(a), "Algorithm") }

// String returns the version as written in the file: "", "v1" or "v2".
func (p ProxyProtocol) String() string {
	return enumString(proxyProtocolNames, int(p), "ProxyProtocol")
}

// String returns the policy as written in the file, e.g. "require".
func (c ClientAuth) String() string { return enumString(clientAuthNames, int(c), "ClientAuth") }

// cipherSuites maps the configurable (TLS 1.2) suite names of crypto/tls to
// their IDs. TLS 1.3 suites are not configurable in crypto/tls, and the
// insecure ones are refused.
var cipherSuites = func() map[string]uint16 {
	m := make(map[string]uint16)
	for _, cs := range tls.CipherSuites() {
		for _, v := range cs.SupportedVersions {
			if v == tls.VersionTLS12 {
				m[cs.Name] = cs.ID
			}
		}
	}
	return m
}()

func cipherName(id uint16) (string, bool) {
	for n, v := range cipherSuites {
		if v == id {
			return n, true
		}
	}
	return "", false
}
