package lbd

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nib-lb/nib/config"
)

// maxSNICerts bounds the SNI certificate cache: client-chosen names must not
// grow memory without limit (Pen caches every name forever).
const maxSNICerts = 256

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
		staple, err := os.ReadFile(t.OCSPStaple)
		if err != nil {
			return nil, fmt.Errorf("tls: ocsp staple: %w", err)
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
		sni := &sniCerts{dir: t.SNIDir, certs: make(map[string]sniEntry), def: &tc.Certificates[0]}
		tc.GetCertificate = sni.get
	}
	return tc, nil
}

// sniCerts loads name.crt and name.key from a directory on first use.
type sniCerts struct {
	dir   string
	def   *tls.Certificate
	mu    sync.Mutex
	certs map[string]sniEntry
}

// sniEntry is a loaded certificate, or (cert nil) a name without files,
// which is looked up again after sniRetry so files added later are found.
type sniEntry struct {
	cert    *tls.Certificate
	checked time.Time
}

const sniRetry = 30 * time.Second

func (s *sniCerts) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if !validSNI(name) {
		return s.def, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.certs[name]; ok && (e.cert != nil || time.Since(e.checked) < sniRetry) {
		if e.cert == nil {
			return s.def, nil
		}
		return e.cert, nil
	}
	base := filepath.Join(s.dir, name)
	c, err := tls.LoadX509KeyPair(base+".crt", base+".key")
	if len(s.certs) >= maxSNICerts {
		clear(s.certs)
	}
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sni %s: %w", name, err)
		}
		s.certs[name] = sniEntry{checked: time.Now()}
		return s.def, nil
	}
	s.certs[name] = sniEntry{cert: &c, checked: time.Now()}
	return &c, nil
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
