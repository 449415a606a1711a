package control

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nib-lb/nib/internal/atomicfile"
)

// Secret file names in the state directory.
const (
	KeyFile   = "control.key"
	CertFile  = "control.crt"
	TokenFile = "control.token"
)

// Secrets are the control API's key pair and token, as EnsureSecrets keeps
// them in the state directory.
type Secrets struct {
	// Cert is the TLS certificate and its private key.
	Cert tls.Certificate
	// Token is the bearer token (64 hex digits).
	Token string
	// Fingerprint is the SHA-256 of the certificate's DER, 64 lower-case
	// hex digits.
	Fingerprint string
	// TokenPath is the token file's path (for logs: never log the token).
	TokenPath string
}

// Fingerprint returns the SHA-256 of a certificate's DER encoding as 64
// lower-case hex digits: the form Secrets.Fingerprint and penctl use.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// EnsureSecrets loads the control API's secrets from dir, creating those
// that are missing with mode 0600: a new key (and so a new certificate for
// it), a certificate whose SANs are the host name, "localhost" and names
// (host names or IP addresses), and a token. An existing key and
// certificate are reused as they are (names then only matter when they are
// created). A key without its certificate gets a new certificate; a
// certificate without its key is replaced along with the key. dir is
// created (0700) when missing.
func EnsureSecrets(dir string, names []string) (Secrets, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Secrets{}, err
	}
	keyPath := filepath.Join(dir, KeyFile)
	certPath := filepath.Join(dir, CertFile)
	tokenPath := filepath.Join(dir, TokenFile)
	var s Secrets
	s.TokenPath = tokenPath

	keyPEM, err := os.ReadFile(keyPath)
	newKey := errors.Is(err, fs.ErrNotExist)
	if err != nil && !newKey {
		return s, err
	}
	var key *ecdsa.PrivateKey
	if newKey {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return s, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return s, err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
			return s, err
		}
	} else {
		key, err = parseKey(keyPEM)
		if err != nil {
			return s, fmt.Errorf("%s: %w", keyPath, err)
		}
	}

	certPEM, err := os.ReadFile(certPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	if newKey || err != nil {
		der, err := selfSign(key, names)
		if err != nil {
			return s, err
		}
		certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := atomicfile.Write(certPath, certPEM, 0o600); err != nil {
			return s, err
		}
	}
	s.Cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return s, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	s.Fingerprint = Fingerprint(s.Cert.Certificate[0])

	tok, err := os.ReadFile(tokenPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return s, err
		}
		s.Token = hex.EncodeToString(b[:])
		if err := atomicfile.Write(tokenPath, []byte(s.Token+"\n"), 0o600); err != nil {
			return s, err
		}
	case err != nil:
		return s, err
	default:
		s.Token = strings.TrimSpace(string(tok))
		if len(s.Token) < 16 {
			return s, fmt.Errorf("%s: token too short (%d characters, want at least 16)", tokenPath, len(s.Token))
		}
	}
	return s, nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("no PKCS#8 PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ECDSA", k)
	}
	return ek, nil
}

// selfSign returns a self-signed certificate's DER for key.
func selfSign(key *ecdsa.PrivateKey, names []string) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "nib lbd control"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	seen := map[string]bool{}
	for _, n := range append([]string{host, "localhost"}, names...) {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if host != "" {
		tmpl.Subject.CommonName = host
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
}
