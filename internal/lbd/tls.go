package lbd

import (
	"bytes"
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/nib-lb/nib/config"
)

// maxSNICerts bounds the SNI certificate cache: client-chosen names must not
// grow memory without limit (Pen caches every name forever). The least
// recently used certificate is dropped first.
const maxSNICerts = 256

// maxSNIMisses bounds the names remembered as having no certificate. They
// are kept apart from the certificates, so a client sending random names
// churns only this list and never evicts a certificate.
const maxSNIMisses = 128

// tlsConfig builds the listener's TLS settings. Files are read now, so a
// missing or bad file is a reload error and never a runtime surprise.
func tlsConfig(t *config.TLS) (*tls.Config, error) {
	keyFile := t.Key
	if keyFile == "" {
		keyFile = t.Cert
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s, key %s: %w", t.Cert, keyFile, err)
	}
	if t.Chain != "" {
		pemData, err := os.ReadFile(t.Chain)
		if err != nil {
			return nil, fmt.Errorf("tls: chain: %w", err)
		}
		n := len(cert.Certificate)
		for {
			var block *pem.Block
			block, pemData = pem.Decode(pemData)
			if block == nil {
				break
			}
			if block.Type == "CERTIFICATE" {
				cert.Certificate = append(cert.Certificate, block.Bytes)
			}
		}
		if len(cert.Certificate) == n {
			return nil, fmt.Errorf("tls: chain %s: no certificates found", t.Chain)
		}
	}
	if t.OCSPStaple != "" {
		staple, err := loadOCSP(t.OCSPStaple, &cert)
		if err != nil {
			return nil, fmt.Errorf("tls: ocsp staple %s: %w", t.OCSPStaple, err)
		}
		cert.OCSPStaple = staple
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   t.MinVersion,
		CipherSuites: t.Ciphers,
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client ca %s: no certificates found", t.ClientCA)
		}
		tc.ClientCAs = pool
	}
	switch t.ClientAuth {
	case config.ClientAuthRequest:
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	case config.ClientAuthRequire:
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if t.SNIDir != "" {
		if st, err := os.Stat(t.SNIDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("tls: sni_dir %s is not a directory", t.SNIDir)
		}
		tc.GetCertificate = newSNICerts(t.SNIDir, &tc.Certificates[0]).get
	}
	return tc, nil
}

// sniCerts loads name.crt and name.key from a directory on first use. Files
// are read outside the lock, so handshakes for different names never wait
// for each other; concurrent handshakes for the same name share one load.
type sniCerts struct {
	dir  string
	def  *tls.Certificate
	load func(certFile, keyFile string) (tls.Certificate, error)

	mu      sync.Mutex
	certs   *lru[*tls.Certificate] // names with a certificate
	misses  *lru[time.Time]        // names without files, and when that was seen
	loading map[string]*sniLoad    // loads in progress
}

// sniLoad is one load of a name's files; done is closed when cert and err
// are set.
type sniLoad struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// sniRetry is how long a name without files is remembered as such; after
// that its files are looked for again, so files added later are found.
const sniRetry = 30 * time.Second

func newSNICerts(dir string, def *tls.Certificate) *sniCerts {
	return &sniCerts{
		dir:     dir,
		def:     def,
		load:    tls.LoadX509KeyPair,
		certs:   newLRU[*tls.Certificate](maxSNICerts),
		misses:  newLRU[time.Time](maxSNIMisses),
		loading: make(map[string]*sniLoad),
	}
}

func (s *sniCerts) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if !validSNI(name) {
		return s.def, nil
	}
	s.mu.Lock()
	if c, ok := s.certs.get(name); ok {
		s.mu.Unlock()
		return c, nil
	}
	if seen, ok := s.misses.get(name); ok && time.Since(seen) < sniRetry {
		s.mu.Unlock()
		return s.def, nil
	}
	if l, ok := s.loading[name]; ok {
		s.mu.Unlock()
		var cancel <-chan struct{}
		if ctx := hello.Context(); ctx != nil {
			cancel = ctx.Done()
		}
		select {
		case <-l.done:
			return s.result(name, l.cert, l.err)
		case <-cancel:
			return nil, fmt.Errorf("sni %s: %w", name, context.Cause(hello.Context()))
		}
	}
	l := &sniLoad{done: make(chan struct{})}
	s.loading[name] = l
	s.mu.Unlock()

	base := filepath.Join(s.dir, name)
	c, err := s.load(base+".crt", base+".key")
	if err == nil {
		l.cert = &c
	}
	l.err = err
	s.mu.Lock()
	delete(s.loading, name)
	switch {
	case err == nil:
		s.certs.put(name, l.cert)
		s.misses.remove(name)
	case errors.Is(err, os.ErrNotExist):
		s.misses.put(name, time.Now())
	}
	s.mu.Unlock()
	close(l.done)
	return s.result(name, l.cert, l.err)
}

// result turns a load's outcome into GetCertificate's: the default
// certificate for a name without files, an error for unusable files.
func (s *sniCerts) result(name string, c *tls.Certificate, err error) (*tls.Certificate, error) {
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, os.ErrNotExist):
		return s.def, nil
	}
	return nil, fmt.Errorf("sni %s: %w", name, err)
}

// lru is a map of at most max entries that drops the least recently used
// one to make room. It is not safe for concurrent use.
type lru[V any] struct {
	max   int
	order list.List // of *lruEntry[V], most recently used first
	m     map[string]*list.Element
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, m: make(map[string]*list.Element)}
}

func (c *lru[V]) len() int { return len(c.m) }

// get returns the value for key and marks it used.
func (c *lru[V]) get(key string) (V, bool) {
	e, ok := c.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry[V]).val, true
}

// put sets the value for key, marks it used, and drops the least recently
// used entry when there are more than max.
func (c *lru[V]) put(key string, v V) {
	if e, ok := c.m[key]; ok {
		e.Value.(*lruEntry[V]).val = v
		c.order.MoveToFront(e)
		return
	}
	c.m[key] = c.order.PushFront(&lruEntry[V]{key: key, val: v})
	if len(c.m) > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.m, last.Value.(*lruEntry[V]).key)
	}
}

func (c *lru[V]) remove(key string) {
	if e, ok := c.m[key]; ok {
		c.order.Remove(e)
		delete(c.m, key)
	}
}

// validSNI accepts DNS names only: no path separators, no "..".
func validSNI(name string) bool {
	if name == "" || len(name) > 253 || strings.Contains(name, "..") || name[0] == '.' {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
		default:
			return false
		}
	}
	return true
}

// maxOCSPResponse bounds an OCSP response file. Real responses are a few
// hundred bytes to a few KiB (more with a delegated responder certificate).
const maxOCSPResponse = 64 << 10

// loadOCSP reads the DER OCSP response at path for cert, the leaf followed
// by its chain. It reads at most maxOCSPResponse bytes from a regular file
// and returns the response only when it parses (golang.org/x/crypto/ocsp)
// and answers for the leaf: the serial number matches and, when the chain
// holds the leaf's issuer, the response is signed by the issuer or by a
// responder the issuer certified. Anything else is refused: stapling it
// would send a file's bytes to every client, or make clients that check
// staples reject the server.
func loadOCSP(path string, cert *tls.Certificate) ([]byte, error) {
	der, err := readRegularFile(path, maxOCSPResponse)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	issuer := issuerOf(leaf, cert.Certificate[1:])
	if _, err := ocsp.ParseResponseForCert(der, leaf, issuer); err != nil {
		what := "serial " + leaf.SerialNumber.Text(16)
		if issuer != nil {
			what += ", issuer " + issuer.Subject.String()
		}
		var structural asn1.StructuralError
		var syntax asn1.SyntaxError
		var status ocsp.ResponseError
		switch {
		case errors.As(err, &structural), errors.As(err, &syntax):
			err = errors.New("not a DER-encoded OCSP response")
		case errors.As(err, &status):
			err = fmt.Errorf("the responder did not answer (%v)", status)
		}
		return nil, fmt.Errorf("not a valid OCSP response for the certificate %s (%s): %w", leaf.Subject, what, err)
	}
	return der, nil
}

// issuerOf returns the certificate in chain that issued leaf, or nil.
func issuerOf(leaf *x509.Certificate, chain [][]byte) *x509.Certificate {
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil || !bytes.Equal(c.RawSubject, leaf.RawIssuer) {
			continue
		}
		if leaf.CheckSignatureFrom(c) == nil {
			return c
		}
	}
	return nil
}

// readRegularFile reads a regular file of at most max bytes. Anything else
// (a device such as /dev/zero, a FIFO, a directory, a larger file) is
// refused without reading more than max+1 bytes; opening does not block on
// a FIFO.
func readRegularFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // the caller names the file
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if t := st.Mode().Type(); t != 0 {
		what := "a special file"
		switch {
		case t&fs.ModeDir != 0:
			what = "a directory"
		case t&fs.ModeDevice != 0:
			what = "a device"
		case t&fs.ModeNamedPipe != 0:
			what = "a FIFO"
		case t&fs.ModeSocket != 0:
			what = "a socket"
		}
		return nil, fmt.Errorf("not a regular file but %s", what)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", st.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than the %d bytes allowed", max)
	}
	return b, nil
}
