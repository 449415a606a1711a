package penctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nib-lb/nib/internal/control"
)

const (
	dialTimeout    = 5 * time.Second
	requestTimeout = 60 * time.Second
	maxReply       = 16 << 20 // bytes of a reply penctl reads
)

// connectError is a connection, authentication, rate-limit or certificate
// problem: exit status 3.
type connectError struct{ msg string }

func (e *connectError) Error() string { return e.msg }

// serverError is a request the server refused or failed: exit status 1.
type serverError struct{ msg string }

func (e *serverError) Error() string { return e.msg }

// errNotPinned and errMismatch are returned by the TLS verification; the
// client records the fingerprint it saw.
var (
	errNotPinned = errors.New("certificate not pinned")
	errMismatch  = errors.New("certificate fingerprint mismatch")
)

// client talks to one lbd control API.
type client struct {
	tls   *tls.Config
	addr  string // host:port
	token string
	pin   string // expected fingerprint; "" accepts any (only with -trust)
	trust bool
	http  *http.Client

	mu   sync.Mutex
	seen string // fingerprint of the last certificate the server showed
}

func newClient(addr, token, pin string, trust bool) *client {
	c := &client{addr: addr, token: token, pin: pin, trust: trust}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The certificate is self-signed: it is checked by its pinned
		// fingerprint in VerifyConnection, not by a CA.
		InsecureSkipVerify: true,
		VerifyConnection:   c.verify,
	}
	c.tls = tc
	tr := &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: dialTimeout}).DialContext,
		TLSHandshakeTimeout: dialTimeout,
		ForceAttemptHTTP2:   true,
	}
	c.http = &http.Client{
		Transport: tr,
		Timeout:   requestTimeout,
		// The API never redirects; a redirect is shown as an error rather
		// than followed (with or without the token).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

func (c *client) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server sent no certificate")
	}
	fp := control.Fingerprint(cs.PeerCertificates[0].Raw)
	c.mu.Lock()
	c.seen = fp
	c.mu.Unlock()
	switch {
	case c.pin == "" && c.trust:
		return nil
	case c.pin == "":
		return errNotPinned
	case c.pin != fp:
		return errMismatch
	}
	return nil
}

// handshake makes a TLS handshake only (no request, so no token is sent)
// and returns the server's certificate fingerprint.
func (c *client) handshake() (string, error) {
	host, _, _ := net.SplitHostPort(c.addr)
	tc := c.tls.Clone()
	tc.ServerName = host
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: tc}
	ctx, cancel := context.WithTimeout(context.Background(), 2*dialTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return "", c.transportError(err)
	}
	conn.Close()
	fp := c.seenFingerprint()
	if fp == "" {
		return "", &connectError{fmt.Sprintf("penctl: %s showed no certificate", c.addr)}
	}
	return fp, nil
}

func (c *client) seenFingerprint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

// do sends one request and returns the reply's body for a 2xx status, or
// a *connectError / *serverError.
func (c *client) do(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, "https://"+c.addr+path, rd)
	if err != nil {
		return nil, &connectError{fmt.Sprintf("penctl: %v", err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, &connectError{fmt.Sprintf("penctl: %s: reading the reply: %v", c.addr, err)}
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	msg := errorText(b, resp.Status)
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return nil, &connectError{fmt.Sprintf("penctl: %s refused the token (401 %s); check -token-file, NIB_TOKEN or the config file's token_file", c.addr, msg)}
	case http.StatusForbidden:
		return nil, &connectError{fmt.Sprintf("penctl: %s: forbidden (403 %s): this address is not allowed by the control ACL", c.addr, msg)}
	case http.StatusTooManyRequests:
		wait := ""
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			wait = " (Retry-After: " + ra + "s)"
		}
		return nil, &connectError{fmt.Sprintf("penctl: %s: too many failed attempts from this address, slowed down (429 %s); wait and retry with the right token%s", c.addr, msg, wait)}
	}
	return nil, &serverError{fmt.Sprintf("%d %s", resp.StatusCode, msg)}
}

// errorText is the "error" field of a JSON error reply, or the body, or
// the status line.
func errorText(b []byte, status string) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	if t := strings.TrimSpace(string(b)); t != "" && len(t) < 4096 {
		return t
	}
	return status
}

func (c *client) transportError(err error) error {
	seen := c.seenFingerprint()
	switch {
	case errors.Is(err, errNotPinned):
		return &connectError{fmt.Sprintf("penctl: %s: no certificate fingerprint to check the server against.\n"+
			"The server's certificate has SHA-256 fingerprint\n  %s\n"+
			"Compare it with the one lbd logs at start (or its control.crt), then run again with\n"+
			"  -fingerprint %s\n"+
			"or trust it once and save it with: penctl -s %s -trust -config FILE", c.addr, seen, seen, c.addr)}
	case errors.Is(err, errMismatch):
		return &connectError{fmt.Sprintf("penctl: %s: CERTIFICATE MISMATCH: refusing to talk to this server.\n"+
			"  expected (pinned) fingerprint: %s\n"+
			"  server's fingerprint:          %s\n"+
			"Either this is another instance (wrong address?) or its certificate was replaced; check before trusting the new one with -trust.", c.addr, c.pin, seen)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &connectError{fmt.Sprintf("penctl: cannot connect to %s: connection refused (is lbd running with a [control] listener on that address and port?)", c.addr)}
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) || strings.Contains(err.Error(), "HTTP response to HTTPS client") {
		return &connectError{fmt.Sprintf("penctl: %s does not speak TLS: is it lbd's control API? (Pen's plain control port is driven with penctl HOST:PORT VERB, without -s)", c.addr)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the method and URL add nothing
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &connectError{fmt.Sprintf("penctl: %s: timed out: %v", c.addr, err)}
	}
	return &connectError{fmt.Sprintf("penctl: %s: %v", c.addr, err)}
}
