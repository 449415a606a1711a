package lbd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/needs"
)

// testPKI is a throwaway PKI written as PEM files into a temporary
// directory: root CA -> intermediate CA -> server leaves, plus a client CA,
// a foreign CA, and a client certificate from each.
type testPKI struct {
	t   *testing.T
	dir string

	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	rootPool          *x509.CertPool

	RootFile  string // root CA certificate
	InterFile string // intermediate CA certificate

	// The default server leaf: DNS default.example and IP 127.0.0.1.
	LeafFile    string // the leaf only
	LeafKeyFile string // its key (PKCS#8)
	BundleFile  string // leaf + intermediate
	leafDER     []byte

	ClientCAFile string
	clientCA     *x509.Certificate
	clientCAKey  *ecdsa.PrivateKey
	ClientCert   tls.Certificate // signed by the client CA
	ForeignCert  tls.Certificate // signed by an unrelated CA
}

var testSerial atomic.Int64

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{t: t, dir: t.TempDir()}
	p.root, p.rootKey = p.ca("nib test root", nil, nil)
	p.inter, p.interKey = p.ca("nib test intermediate", p.root, p.rootKey)
	p.rootPool = x509.NewCertPool()
	p.rootPool.AddCert(p.root)
	p.RootFile = p.write("root.pem", certPEM(p.root.Raw))
	p.InterFile = p.write("inter.pem", certPEM(p.inter.Raw))

	der, key := p.leaf("default.example", false)
	p.leafDER = der
	p.LeafFile = p.write("leaf.pem", certPEM(der))
	p.LeafKeyFile = p.write("leaf.key", pkcs8PEM(t, key))
	p.BundleFile = p.write("bundle.pem", certPEM(der), certPEM(p.inter.Raw))

	p.clientCA, p.clientCAKey = p.ca("nib test client CA", nil, nil)
	p.ClientCAFile = p.write("client-ca.pem", certPEM(p.clientCA.Raw))
	p.ClientCert = p.clientCert("client.example", p.clientCA, p.clientCAKey)
	foreign, foreignKey := p.ca("nib test client CA", nil, nil) // same name, other key
	p.ForeignCert = p.clientCert("foreign.example", foreign, foreignKey)
	return p
}

func (p *testPKI) ca(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(testSerial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c, key
}

// leaf returns a server certificate for name signed by the intermediate;
// withIP adds 127.0.0.1 (the default leaf always has it).
func (p *testPKI) leaf(name string, withIP bool) ([]byte, *ecdsa.PrivateKey) {
	p.t.Helper()
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(testSerial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if withIP || name == "default.example" {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter, &key.PublicKey, p.interKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return der, key
}

func (p *testPKI) clientCert(cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) tls.Certificate {
	p.t.Helper()
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(testSerial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// sniPair writes dir/name.crt (leaf + intermediate) and dir/name.key.
func (p *testPKI) sniPair(dir, name string) {
	p.t.Helper()
	der, key := p.leaf(name, false)
	writeFile(p.t, filepath.Join(dir, name+".crt"), certPEM(der), certPEM(p.inter.Raw))
	writeFile(p.t, filepath.Join(dir, name+".key"), pkcs8PEM(p.t, key))
}

func (p *testPKI) write(name string, blocks ...[]byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	writeFile(p.t, path, blocks...)
	return path
}

func writeFile(t *testing.T, path string, blocks ...[]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(blocks, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pkcs8PEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func sec1PEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// tlsService is oneService with TLS termination.
func tlsService(listen netip.AddrPort, tc *config.TLS, backends ...netip.AddrPort) *config.Config {
	cfg := oneService(listen, backends...)
	cfg.Services[0].TLS = tc
	return cfg
}

// tlsDaemon starts a daemon serving TLS on a fresh port in front of a named
// echo backend "a".
func tlsDaemon(t *testing.T, tc *config.TLS) (*Daemon, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	backend := namedBackend(t, "a")
	listen := freePort(t)
	d, _ := newDaemon(t, tlsService(listen, tc, backend))
	return d, listen, backend
}

// verifying returns a client config that trusts only the test root.
func (p *testPKI) verifying(serverName string) *tls.Config {
	return &tls.Config{RootCAs: p.rootPool, ServerName: serverName}
}

// dialTLS connects and completes the client side of the handshake, with
// bounded timeouts. The connection is closed at cleanup.
func dialTLS(t *testing.T, addr netip.AddrPort, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsGreet connects through TLS and reads the backend's name line. With
// TLS 1.3 the server checks the client certificate after the client's
// handshake has finished, so a rejection may only show here.
func tlsGreet(t *testing.T, addr netip.AddrPort, cfg *tls.Config) (string, *tls.Conn, error) {
	t.Helper()
	c, err := dialTLS(t, addr, cfg)
	if err != nil {
		return "", nil, err
	}
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, b); err != nil {
			return "", nil, fmt.Errorf("reading greeting: %w", err)
		}
		if b[0] == '\n' {
			return string(line), c, nil
		}
		line = append(line, b[0])
		if len(line) > 64 {
			return "", nil, fmt.Errorf("greeting too long: %q", line)
		}
	}
}

// mustGreet is tlsGreet that also checks the greeting and an echo.
func mustGreet(t *testing.T, addr netip.AddrPort, cfg *tls.Config) *tls.Conn {
	t.Helper()
	name, c, err := tlsGreet(t, addr, cfg)
	if err != nil {
		t.Fatalf("TLS connection through the proxy: %v", err)
	}
	if name != "a" {
		t.Fatalf("greeting %q, want a", name)
	}
	echoes(t, c, "ping over tls")
	return c
}

// waitIdle waits until the daemon's services have no open connections, so
// that the server side of a failed handshake has finished (and logged).
func waitIdle(t *testing.T, d *Daemon) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.active() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", d.active())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}

func TestTLSChain(t *testing.T) {
	p := newTestPKI(t)

	t.Run("chain file", func(t *testing.T) {
		tc := config.NewTLS(p.LeafFile, p.LeafKeyFile)
		tc.Chain = p.InterFile
		_, listen, _ := tlsDaemon(t, tc)
		c := mustGreet(t, listen, p.verifying("default.example"))
		certs := c.ConnectionState().PeerCertificates
		if len(certs) != 2 {
			t.Fatalf("server sent %d certificates, want leaf + intermediate", len(certs))
		}
		if !bytes.Equal(certs[0].Raw, p.leafDER) || !bytes.Equal(certs[1].Raw, p.inter.Raw) {
			t.Fatalf("server sent %s, %s; want the leaf then the intermediate", certs[0].Subject, certs[1].Subject)
		}
	})

	t.Run("no chain fails verification", func(t *testing.T) {
		_, listen, _ := tlsDaemon(t, config.NewTLS(p.LeafFile, p.LeafKeyFile))
		_, _, err := tlsGreet(t, listen, p.verifying("default.example"))
		if !isUnknownAuthority(err) {
			t.Fatalf("without the intermediate a root-only client got %v, want an unknown-authority error", err)
		}
		// The leaf alone is what was served.
		c, err := dialTLS(t, listen, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(c.ConnectionState().PeerCertificates); n != 1 {
			t.Fatalf("server sent %d certificates, want 1", n)
		}
	})

	t.Run("intermediate in cert file", func(t *testing.T) {
		_, listen, _ := tlsDaemon(t, config.NewTLS(p.BundleFile, p.LeafKeyFile))
		c := mustGreet(t, listen, p.verifying("default.example"))
		if n := len(c.ConnectionState().PeerCertificates); n != 2 {
			t.Fatalf("server sent %d certificates, want 2", n)
		}
	})

	t.Run("reload adds chain", func(t *testing.T) {
		tc := config.NewTLS(p.LeafFile, p.LeafKeyFile)
		d, listen, backend := tlsDaemon(t, tc)
		if _, _, err := tlsGreet(t, listen, p.verifying("default.example")); !isUnknownAuthority(err) {
			t.Fatalf("before reload: %v, want an unknown-authority error", err)
		}
		waitIdle(t, d) // see TestTLSHandshakeErrorLogDuringReload
		tc2 := *tc
		tc2.Chain = p.InterFile
		if err := d.Apply(tlsService(listen, &tc2, backend)); err != nil {
			t.Fatal(err)
		}
		c := mustGreet(t, listen, p.verifying("default.example"))
		if n := len(c.ConnectionState().PeerCertificates); n != 2 {
			t.Fatalf("after reload the server sent %d certificates, want 2", n)
		}
	})
}

func TestTLSKeyFile(t *testing.T) {
	p := newTestPKI(t)
	der, key := p.leaf("default.example", true)

	cases := []struct {
		name       string
		cert, key  string
		wantChainN int
	}{
		{"separate key file", p.write("sep.pem", certPEM(der), certPEM(p.inter.Raw)), p.write("sep.key", pkcs8PEM(t, key)), 2},
		{"separate SEC1 key file", p.write("sec1.pem", certPEM(der)), p.write("sec1.key", sec1PEM(t, key)), 1},
		{"key after certs in cert file", p.write("combined.pem", certPEM(der), certPEM(p.inter.Raw), sec1PEM(t, key)), "", 2},
		{"key before certs in cert file", p.write("keyfirst.pem", pkcs8PEM(t, key), certPEM(der), certPEM(p.inter.Raw)), "", 2},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, listen, _ := tlsDaemon(t, config.NewTLS(tt.cert, tt.key))
			cfg := &tls.Config{RootCAs: p.rootPool, ServerName: "default.example"}
			if tt.wantChainN == 1 {
				cfg = &tls.Config{InsecureSkipVerify: true}
			}
			c := mustGreet(t, listen, cfg)
			certs := c.ConnectionState().PeerCertificates
			if len(certs) != tt.wantChainN || !bytes.Equal(certs[0].Raw, der) {
				t.Fatalf("server sent %d certificates (leaf match %v), want %d led by the configured leaf",
					len(certs), len(certs) > 0 && bytes.Equal(certs[0].Raw, der), tt.wantChainN)
			}
		})
	}

	t.Run("no key anywhere", func(t *testing.T) {
		d, listen, backend := tlsDaemon(t, config.NewTLS(p.BundleFile, p.LeafKeyFile))
		err := d.Apply(tlsService(listen, config.NewTLS(p.BundleFile, ""), backend))
		if err == nil || !strings.Contains(err.Error(), p.BundleFile) {
			t.Fatalf("cert file without a key and Key \"\": %v, want an error naming %s", err, p.BundleFile)
		}
		mustGreet(t, listen, p.verifying("default.example"))
	})
}

func TestTLSMinVersion(t *testing.T) {
	p := newTestPKI(t)
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	v12 := &tls.Config{RootCAs: p.rootPool, ServerName: "default.example", MaxVersion: tls.VersionTLS12}
	v13 := &tls.Config{RootCAs: p.rootPool, ServerName: "default.example", MinVersion: tls.VersionTLS13}

	t.Run("default 1.2", func(t *testing.T) {
		tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
		_, listen, _ := tlsDaemon(t, tc)
		_, _, err := tlsGreet(t, listen, old)
		if err == nil {
			t.Fatal("a TLS 1.1 client was served by a TLS 1.2 minimum")
		}
		if !strings.Contains(err.Error(), "remote error") {
			t.Fatalf("TLS 1.1 client: %v, want the server to refuse the version", err)
		}
		c := mustGreet(t, listen, v12)
		if v := c.ConnectionState().Version; v != tls.VersionTLS12 {
			t.Fatalf("TLS 1.2 client negotiated %s", tls.VersionName(v))
		}
		c = mustGreet(t, listen, v13)
		if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("TLS 1.3 client negotiated %s", tls.VersionName(v))
		}
	})

	t.Run("minimum 1.3", func(t *testing.T) {
		tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
		tc.MinVersion = tls.VersionTLS13
		_, listen, _ := tlsDaemon(t, tc)
		_, _, err := tlsGreet(t, listen, v12)
		if err == nil {
			t.Fatal("a TLS 1.2 client was served by a TLS 1.3 minimum")
		}
		if !strings.Contains(err.Error(), "remote error") {
			t.Fatalf("TLS 1.2 client: %v, want the server to refuse the version", err)
		}
		c := mustGreet(t, listen, v13)
		if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("TLS 1.3 client negotiated %s", tls.VersionName(v))
		}
	})
}

func TestTLSCiphers(t *testing.T) {
	p := newTestPKI(t)
	tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
	tc.Ciphers = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	_, listen, _ := tlsDaemon(t, tc)
	client := func(suite uint16) *tls.Config {
		c := p.verifying("default.example")
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{suite}
		return c
	}
	if _, _, err := tlsGreet(t, listen, client(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)); err == nil {
		t.Fatal("a TLS 1.2 client offering only an unconfigured suite was served")
	}
	c := mustGreet(t, listen, client(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	if s := c.ConnectionState().CipherSuite; s != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Fatalf("negotiated %s", tls.CipherSuiteName(s))
	}
}

// sniLeaf connects with serverName (no verification) and returns the DNS
// names of the leaf the server chose.
func sniLeaf(t *testing.T, addr netip.AddrPort, serverName string) []string {
	t.Helper()
	c := mustGreet(t, addr, &tls.Config{InsecureSkipVerify: true, ServerName: serverName})
	return c.ConnectionState().PeerCertificates[0].DNSNames
}

func TestTLSSNIDir(t *testing.T) {
	p := newTestPKI(t)
	sni := filepath.Join(p.dir, "sni")
	if err := os.Mkdir(sni, 0o700); err != nil {
		t.Fatal(err)
	}
	p.sniPair(sni, "a.example")
	p.sniPair(sni, "b.example")
	// Pairs the server must never use: beside the directory, and in a
	// subdirectory of it.
	p.sniPair(p.dir, "x")
	if err := os.Mkdir(filepath.Join(sni, "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	p.sniPair(filepath.Join(sni, "a"), "b")

	tc := config.NewTLS(p.LeafFile, p.LeafKeyFile)
	tc.Chain = p.InterFile
	tc.SNIDir = sni
	d, listen, backend := tlsDaemon(t, tc)

	for _, name := range []string{"a.example", "b.example"} {
		// The pair's own chain lets a root-only client verify it.
		c := mustGreet(t, listen, p.verifying(name))
		st := c.ConnectionState()
		if got := st.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{name}) {
			t.Fatalf("SNI %s: leaf for %v", name, got)
		}
		if len(st.PeerCertificates) != 2 {
			t.Fatalf("SNI %s: %d certificates, want 2", name, len(st.PeerCertificates))
		}
	}
	if got := sniLeaf(t, listen, "A.Example"); !slices.Equal(got, []string{"a.example"}) {
		t.Fatalf("SNI A.Example: leaf for %v, want a.example (names are case-insensitive)", got)
	}
	def := []string{"default.example"}
	for _, name := range []string{"", "unknown.example", "../x", "..", "a/b", "./a.example", "sni/../x", `..\x`, "a.example/", "a.example\x00"} {
		if got := sniLeaf(t, listen, name); !slices.Equal(got, def) {
			t.Fatalf("SNI %q: leaf for %v, want the default certificate", name, got)
		}
	}
	// The default certificate still carries the configured chain.
	c := mustGreet(t, listen, p.verifying("default.example"))
	if n := len(c.ConnectionState().PeerCertificates); n != 2 {
		t.Fatalf("default certificate with SNI dir: %d certificates, want 2", n)
	}

	// A pair added while running is used on the name's first use.
	p.sniPair(sni, "c.example")
	if got := sniLeaf(t, listen, "c.example"); !slices.Equal(got, []string{"c.example"}) {
		t.Fatalf("SNI c.example added after start: leaf for %v", got)
	}

	// A name seen before its files existed is remembered as absent until
	// the next reload; a reload (same config) finds the new pair.
	if got := sniLeaf(t, listen, "late.example"); !slices.Equal(got, def) {
		t.Fatalf("SNI late.example without files: %v", got)
	}
	p.sniPair(sni, "late.example")
	if got := sniLeaf(t, listen, "late.example"); !slices.Equal(got, []string{"late.example"}) {
		t.Logf("SNI late.example added after a miss: still %v until reload (negative cache)", got)
	}
	if err := d.Apply(tlsService(listen, tc, backend)); err != nil {
		t.Fatal(err)
	}
	if got := sniLeaf(t, listen, "late.example"); !slices.Equal(got, []string{"late.example"}) {
		t.Fatalf("SNI late.example after reload: leaf for %v", got)
	}
}

// TestTLSSNICacheBounded drives the SNI lookup directly with many
// client-chosen names: both caches stay bounded, names without files never
// evict a certificate, and certificates are dropped least recently used
// first.
func TestTLSSNICacheBounded(t *testing.T) {
	p := newTestPKI(t)
	sni := t.TempDir()
	p.sniPair(sni, "a.example")
	def, err := tls.LoadX509KeyPair(p.LeafFile, p.LeafKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := newSNICerts(sni, &def)
	get := func(name string) *tls.Certificate {
		t.Helper()
		c, err := s.get(&tls.ClientHelloInfo{ServerName: name})
		if err != nil || c == nil {
			t.Fatalf("%s: %v, %v", name, c, err)
		}
		return c
	}
	a := get("a.example")
	if a == &def {
		t.Fatal("a.example: the default certificate")
	}
	// From now on a.example can only come from the cache.
	os.Remove(filepath.Join(sni, "a.example.crt"))
	os.Remove(filepath.Join(sni, "a.example.key"))
	for i := range 1000 {
		name := rand.Text() + ".example"
		if c := get(name); c != &def {
			t.Fatalf("%s (%d): not the default certificate", name, i)
		}
		if s.certs.len() > maxSNICerts || s.misses.len() > maxSNIMisses {
			t.Fatalf("%d certificates and %d misses cached, bounds are %d and %d", s.certs.len(), s.misses.len(), maxSNICerts, maxSNIMisses)
		}
	}
	if c := get("a.example"); c != a {
		t.Fatal("a.example was evicted by 1000 names without certificates")
	}
	for _, bad := range []string{"../x", "a/b", "/etc/passwd", ".hidden"} {
		if c := get(bad); c != &def {
			t.Fatalf("%q: not the default certificate", bad)
		}
		if _, ok := s.misses.m[bad]; ok {
			t.Fatalf("invalid name %q was cached", bad)
		}
	}

	// More names with certificates than fit: the least recently used goes.
	p.sniPair(sni, "pair")
	for i := range maxSNICerts {
		for _, ext := range []string{".crt", ".key"} {
			if err := os.Symlink(filepath.Join(sni, "pair"+ext), filepath.Join(sni, fmt.Sprintf("g%d.example%s", i, ext))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range maxSNICerts - 1 {
		get(fmt.Sprintf("g%d.example", i))
	}
	get("a.example") // used most recently: kept
	last := get(fmt.Sprintf("g%d.example", maxSNICerts-1))
	if s.certs.len() != maxSNICerts {
		t.Fatalf("%d certificates cached, want %d", s.certs.len(), maxSNICerts)
	}
	if _, ok := s.certs.m["g0.example"]; ok {
		t.Fatal("g0.example, the least recently used, is still cached")
	}
	if c := get("a.example"); c != a {
		t.Fatal("a.example, recently used, was evicted")
	}
	if c := get(fmt.Sprintf("g%d.example", maxSNICerts-1)); c != last {
		t.Fatal("the newest certificate was evicted")
	}
}

// TestTLSSNILoadsConcurrently: loading one name's files (here stuck on a
// FIFO) holds up neither handshakes for other names nor cached ones.
func TestTLSSNILoadsConcurrently(t *testing.T) {
	p := newTestPKI(t)
	sni := t.TempDir()
	p.sniPair(sni, "fast.example")
	p.sniPair(sni, "cached.example")
	p.sniPair(sni, "slow.example")
	crt, err := os.ReadFile(filepath.Join(sni, "slow.example.crt"))
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(sni, "slow.example.crt")
	os.Remove(fifo)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	release := func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		f.Write(crt)
		f.Close()
	}
	def, err := tls.LoadX509KeyPair(p.LeafFile, p.LeafKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := newSNICerts(sni, &def)
	type result struct {
		c   *tls.Certificate
		err error
	}
	get := func(name string) chan result {
		ch := make(chan result, 1)
		go func() {
			c, err := s.get(&tls.ClientHelloInfo{ServerName: name})
			ch <- result{c, err}
		}()
		return ch
	}
	if r := <-get("cached.example"); r.err != nil || r.c == &def {
		t.Fatalf("cached.example: %v", r.err)
	}
	slow := get("slow.example")
	time.Sleep(100 * time.Millisecond) // let it block on the FIFO
	for _, name := range []string{"fast.example", "cached.example", "none.example"} {
		select {
		case r := <-get(name):
			if r.err != nil || r.c == nil {
				t.Errorf("%s: %v", name, r.err)
			}
		case <-time.After(2 * time.Second):
			release()
			t.Fatalf("%s waits for another name's files to load", name)
		}
	}
	select {
	case <-slow:
		t.Fatal("slow.example loaded before its certificate was written")
	default:
	}
	release()
	select {
	case r := <-slow:
		if r.err != nil || r.c == &def || r.c.Leaf == nil || r.c.Leaf.DNSNames[0] != "slow.example" {
			t.Fatalf("slow.example: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow.example never loaded")
	}
}

// TestTLSSNISharedLoad: concurrent handshakes for one uncached name load its
// files once and all get the same certificate.
func TestTLSSNISharedLoad(t *testing.T) {
	p := newTestPKI(t)
	sni := t.TempDir()
	p.sniPair(sni, "a.example")
	def, err := tls.LoadX509KeyPair(p.LeafFile, p.LeafKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := newSNICerts(sni, &def)
	var loads atomic.Int32
	unblock := make(chan struct{})
	s.load = func(certFile, keyFile string) (tls.Certificate, error) {
		loads.Add(1)
		<-unblock
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	const n = 8
	got := make(chan *tls.Certificate, n)
	for range n {
		go func() {
			c, err := s.get(&tls.ClientHelloInfo{ServerName: "a.example"})
			if err != nil {
				t.Error(err)
			}
			got <- c
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		waiting := len(s.loading) == 1 && loads.Load() == 1
		s.mu.Unlock()
		if waiting || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(50 * time.Millisecond) // let the others find the load in progress
	close(unblock)
	first := <-got
	for range n - 1 {
		if c := <-got; c != first || c == &def {
			t.Fatal("handshakes for one name got different certificates")
		}
	}
	if l := loads.Load(); l != 1 {
		t.Fatalf("%d loads for one name, want 1", l)
	}
}

// ocspResponse returns a DER OCSP response saying serial is good, for a
// certificate issued by issuer, signed with key (whose certificate is
// responder).
func ocspResponse(t *testing.T, serial *big.Int, issuer, responder *x509.Certificate, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := ocsp.CreateResponse(issuer, responder, ocsp.Response{
		Status:       ocsp.Good,
		SerialNumber: serial,
		ThisUpdate:   time.Now().Add(-time.Minute),
		NextUpdate:   time.Now().Add(time.Hour),
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestTLSOCSPStaple(t *testing.T) {
	p := newTestPKI(t)
	leaf, err := x509.ParseCertificate(p.leafDER)
	if err != nil {
		t.Fatal(err)
	}
	staple := ocspResponse(t, leaf.SerialNumber, p.inter, p.inter, p.interKey)
	stapleFile := p.write("ocsp.der", staple)
	sni := t.TempDir()

	tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
	tc.OCSPStaple = stapleFile
	tc.SNIDir = sni
	_, listen, _ := tlsDaemon(t, tc)
	for _, maxV := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := p.verifying("default.example")
		cfg.MaxVersion = maxV
		c := mustGreet(t, listen, cfg)
		if got := c.ConnectionState().OCSPResponse; !bytes.Equal(got, staple) {
			t.Fatalf("%s: stapled %d bytes, want the file's %d bytes", tls.VersionName(maxV), len(got), len(staple))
		}
	}

	// Without the issuer in the chain only the serial number can be
	// checked, and a response with it is accepted.
	leafOnly := config.NewTLS(p.LeafFile, p.LeafKeyFile)
	leafOnly.OCSPStaple = stapleFile
	_, listen2, _ := tlsDaemon(t, leafOnly)
	if c, err := dialTLS(t, listen2, &tls.Config{InsecureSkipVerify: true}); err != nil || !bytes.Equal(c.ConnectionState().OCSPResponse, staple) {
		t.Fatalf("leaf without chain: %v, stapled %v", err, c != nil)
	}

	otherDER, _ := p.leaf("other.example", false)
	other, err := x509.ParseCertificate(otherDER)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 471)
	rand.Read(random)
	fifo := filepath.Join(p.dir, "ocsp.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := append(bytes.Clone(staple), make([]byte, maxOCSPResponse)...)
	cases := []struct {
		name, cert, file, want string
	}{
		{"another certificate's response", p.BundleFile, p.write("other.der", ocspResponse(t, other.SerialNumber, p.inter, p.inter, p.interKey)), "no response matching"},
		{"another certificate's response, no chain", p.LeafFile, p.write("other.der", ocspResponse(t, other.SerialNumber, p.inter, p.inter, p.interKey)), "no response matching"},
		{"signed by another CA", p.BundleFile, p.write("root.der", ocspResponse(t, leaf.SerialNumber, p.inter, p.root, p.rootKey)), "signature"},
		{"not an OCSP response", p.BundleFile, p.write("random.der", random), "not a valid OCSP response"},
		{"a text file", p.BundleFile, p.write("passwd", []byte("root:x:0:0:root:/root:/bin/bash\n")), "not a valid OCSP response"},
		{"too large", p.BundleFile, p.write("big.der", huge), "allowed"},
		{"a device", p.BundleFile, "/dev/zero", "not a regular file"},
		{"a FIFO", p.BundleFile, fifo, "not a regular file"},
		{"a directory", p.BundleFile, p.dir, "not a regular file"},
		{"missing file", p.BundleFile, filepath.Join(p.dir, "no-such-ocsp.der"), "no such file"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			good := config.NewTLS(tt.cert, p.LeafKeyFile)
			d, listen, backend := tlsDaemon(t, good)
			bad := *good
			bad.OCSPStaple = tt.file
			done := make(chan error, 1)
			go func() { done <- d.Apply(tlsService(listen, &bad, backend)) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("loading the OCSP response blocks")
			}
			if err == nil || !strings.Contains(err.Error(), tt.file) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("staple %s: %v, want an error naming the file and saying %q", tt.file, err, tt.want)
			}
			if got := d.Config().Services[0].TLS; !reflect.DeepEqual(*got, *good) {
				t.Fatalf("running TLS config changed by a failed reload: %+v", got)
			}
			c, err := dialTLS(t, listen, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(c.ConnectionState().OCSPResponse); n != 0 {
				t.Fatalf("stapled %d bytes after the refused reload", n)
			}
		})
	}
}

// TestTLSControlCannotNameFiles: a control client cannot make lbd read a
// file, as an OCSP staple or an SNI directory; lbd's own configuration can.
func TestTLSControlCannotNameFiles(t *testing.T) {
	p := newTestPKI(t)
	secret := p.write("secret", []byte("root:$y$j9T$secret-hash:19000:0:99999:7:::\n"))
	tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
	cfg := tlsService(freePort(t), tc, namedBackend(t, "a"))
	cfg.Control.PenListen = filepath.Join(t.TempDir(), "ctl")
	d, _ := newDaemon(t, cfg)
	listen := cfg.Services[0].Listen

	leaf, err := x509.ParseCertificate(p.leafDER)
	if err != nil {
		t.Fatal(err)
	}
	valid := p.write("ocsp.der", ocspResponse(t, leaf.SerialNumber, p.inter, p.inter, p.interKey))
	for _, cmd := range []string{
		"ssl_ocsp_response " + secret,
		"ssl_ocsp_response /dev/zero",
		"ssl_ocsp_response " + valid,
		"ssl_sni_path " + p.dir,
		"service web ssl_ocsp_response " + secret,
	} {
		got := penCommand(t, cfg.Control.PenListen, cmd)
		if !strings.Contains(got, "refused over the control socket") || !strings.HasSuffix(got, "\n") {
			t.Errorf("control %q: reply %q, want a refusal line", cmd, got)
		}
	}
	if got := d.Config().Services[0].TLS; !reflect.DeepEqual(*got, *tc) {
		t.Fatalf("control commands changed the TLS config: %+v", got)
	}
	c := mustGreet(t, listen, p.verifying("default.example"))
	if got := c.ConnectionState().OCSPResponse; len(got) != 0 {
		t.Fatalf("the server staples %q", got)
	}
}

func TestTLSClientCert(t *testing.T) {
	p := newTestPKI(t)
	// Always present the given certificate, whatever CAs the server names,
	// so the server's verification is what is tested.
	client := func(cert *tls.Certificate, maxV uint16) *tls.Config {
		cfg := p.verifying("default.example")
		cfg.MaxVersion = maxV
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}
		return cfg
	}
	versions := []uint16{tls.VersionTLS12, tls.VersionTLS13}

	t.Run("require", func(t *testing.T) {
		tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
		tc.ClientCA = p.ClientCAFile
		tc.ClientAuth = config.ClientAuthRequire
		_, listen, _ := tlsDaemon(t, tc)
		for _, v := range versions {
			if _, _, err := tlsGreet(t, listen, client(nil, v)); err == nil {
				t.Fatalf("%s: served without a client certificate", tls.VersionName(v))
			}
			if _, _, err := tlsGreet(t, listen, client(&p.ForeignCert, v)); err == nil {
				t.Fatalf("%s: served with a certificate from another CA", tls.VersionName(v))
			}
			c := mustGreet(t, listen, client(&p.ClientCert, v))
			if got := c.ConnectionState().Version; got != v {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(got), tls.VersionName(v))
			}
		}
		// A client with no GetClientCertificate at all.
		if _, _, err := tlsGreet(t, listen, p.verifying("default.example")); err == nil {
			t.Fatal("plain client served under client_auth require")
		}
	})

	t.Run("request", func(t *testing.T) {
		tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
		tc.ClientCA = p.ClientCAFile
		tc.ClientAuth = config.ClientAuthRequest
		_, listen, _ := tlsDaemon(t, tc)
		for _, v := range versions {
			mustGreet(t, listen, client(nil, v))
			mustGreet(t, listen, client(&p.ClientCert, v))
			if _, _, err := tlsGreet(t, listen, client(&p.ForeignCert, v)); err == nil {
				t.Fatalf("%s: a certificate from another CA was accepted under request", tls.VersionName(v))
			}
		}
		mustGreet(t, listen, p.verifying("default.example"))
	})
}

func TestTLSBadFilesKeepRunningConfig(t *testing.T) {
	p := newTestPKI(t)
	good := config.NewTLS(p.BundleFile, p.LeafKeyFile)
	d, listen, backend := tlsDaemon(t, good)
	held := mustGreet(t, listen, p.verifying("default.example"))

	_, otherKey := p.leaf("other.example", false)
	wrongKey := p.write("wrong.key", pkcs8PEM(t, otherKey))
	noCerts := p.write("nocerts.pem", []byte("# intermediates go here\n"), pkcs8PEM(t, otherKey))
	emptyCA := p.write("empty-ca.pem")
	garbageCA := p.write("garbage-ca.pem", []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"))
	notDir := p.write("not-a-dir")

	cases := []struct {
		name   string
		mutate func(*config.TLS)
		file   string
	}{
		{"missing cert", func(tc *config.TLS) { tc.Cert = filepath.Join(p.dir, "missing.pem") }, filepath.Join(p.dir, "missing.pem")},
		{"missing key", func(tc *config.TLS) { tc.Key = filepath.Join(p.dir, "missing.key") }, filepath.Join(p.dir, "missing.key")},
		{"key does not match", func(tc *config.TLS) { tc.Key = wrongKey }, wrongKey},
		{"chain without certificates", func(tc *config.TLS) { tc.Chain = noCerts }, noCerts},
		{"missing chain", func(tc *config.TLS) { tc.Chain = filepath.Join(p.dir, "missing-chain.pem") }, filepath.Join(p.dir, "missing-chain.pem")},
		{"empty client CA", func(tc *config.TLS) {
			tc.ClientCA, tc.ClientAuth = emptyCA, config.ClientAuthRequire
		}, emptyCA},
		{"garbage client CA", func(tc *config.TLS) {
			tc.ClientCA, tc.ClientAuth = garbageCA, config.ClientAuthRequest
		}, garbageCA},
		{"missing client CA", func(tc *config.TLS) {
			tc.ClientCA, tc.ClientAuth = filepath.Join(p.dir, "missing-ca.pem"), config.ClientAuthRequire
		}, filepath.Join(p.dir, "missing-ca.pem")},
		{"sni dir is a file", func(tc *config.TLS) { tc.SNIDir = notDir }, notDir},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			bad := *good
			tt.mutate(&bad)
			err := d.Apply(tlsService(listen, &bad, backend))
			if err == nil {
				t.Fatal("bad TLS files accepted")
			}
			if !strings.Contains(err.Error(), tt.file) {
				t.Fatalf("error %q does not name %s", err, tt.file)
			}
			if got := d.Config().Services[0].TLS; got == nil || !reflect.DeepEqual(*got, *good) {
				t.Fatalf("running TLS config changed by a failed reload: %+v", got)
			}
			mustGreet(t, listen, p.verifying("default.example"))
		})
	}
	echoes(t, held, "connection from before the failed reloads")

	// A new TLS service with a bad file does not start at all.
	other := freePort(t)
	cfg := tlsService(listen, good, backend)
	s2 := config.NewService("second", other, config.TCP)
	s2.Backends = []config.Backend{config.NewBackend(backend)}
	s2.TLS = config.NewTLS(filepath.Join(p.dir, "missing.pem"), "")
	cfg.Services = append(cfg.Services, s2)
	if err := d.Apply(cfg); err == nil {
		t.Fatal("second service with a missing cert accepted")
	}
	if c, err := net.DialTimeout("tcp", other.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("service with a bad cert is listening")
	}
	mustGreet(t, listen, p.verifying("default.example"))
}

func TestTLSDataPath(t *testing.T) {
	p := newTestPKI(t)
	_, listen, _ := tlsDaemon(t, config.NewTLS(p.BundleFile, p.LeafKeyFile))

	// Clients that connect and stall before or inside the handshake.
	for i := range 8 {
		c, err := net.DialTimeout("tcp", listen.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 1 {
			// A TLS record header promising a ClientHello that never comes.
			if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	c := mustGreet(t, listen, p.verifying("default.example"))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("served after %v behind stalled handshakes", d)
	}

	c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, payload) {
		i := 0
		for i < len(got) && got[i] == payload[i] {
			i++
		}
		t.Fatalf("1 MiB echo differs from byte %d", i)
	}
	// Half-close through TLS: close_notify ends the backend's copy, which
	// closes back.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
		t.Fatalf("after CloseWrite: %d bytes, %v; want a clean EOF", n, err)
	}
}

func TestTLSCurl(t *testing.T) {
	curl := needs.Tool(t, "curl")
	p := newTestPKI(t)
	sni := t.TempDir()
	p.sniPair(sni, "a.example")

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the backend")
	}))
	t.Cleanup(web.Close)
	backend := web.Listener.Addr().(*net.TCPAddr).AddrPort()

	tc := config.NewTLS(p.LeafFile, p.LeafKeyFile)
	tc.Chain = p.InterFile
	tc.SNIDir = sni
	listen := freePort(t)
	newDaemon(t, tlsService(listen, tc, backend))
	port := listen.Port()

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		args = append([]string{"-s", "-S", "--max-time", "10", "--cacert", p.RootFile}, args...)
		out, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run(fmt.Sprintf("https://127.0.0.1:%d/", port)); err != nil || out != "hello from the backend" {
		t.Fatalf("curl https://127.0.0.1: %v: %s", err, out)
	}
	if out, err := run("--resolve", fmt.Sprintf("a.example:%d:127.0.0.1", port), fmt.Sprintf("https://a.example:%d/", port)); err != nil || out != "hello from the backend" {
		t.Fatalf("curl https://a.example: %v: %s", err, out)
	}
	// A name without a pair gets the default certificate, which curl
	// rejects for that name.
	if out, err := run("--resolve", fmt.Sprintf("z.example:%d:127.0.0.1", port), fmt.Sprintf("https://z.example:%d/", port)); err == nil {
		t.Fatalf("curl https://z.example verified the default certificate: %s", out)
	}
}

// TestTLSHandshakeErrorLogDuringReload reloads while clients fail their
// handshakes. A failed handshake is logged through Daemon.debugf from the
// connection's goroutine, and debugf reads d.cfg without holding d.mu, while
// Apply replaces d.cfg under d.mu: a data race (daemon.go, debugf vs
// applyLocked), reported by -race. It is not specific to TLS: every
// svc.logf call from a stream connection (backend dial errors too) races
// with a reload the same way.
func TestTLSHandshakeErrorLogDuringReload(t *testing.T) {
	p := newTestPKI(t)
	tc := config.NewTLS(p.BundleFile, p.LeafKeyFile)
	d, listen, backend := tlsDaemon(t, tc)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", listen.String(), time.Second)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(time.Second))
			io.WriteString(c, "GET / HTTP/1.0\r\n\r\n") // not TLS: the handshake fails
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		if err := d.Apply(tlsService(listen, tc, backend)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	mustGreet(t, listen, p.verifying("default.example"))
}
