package appliance

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/penctl"
)

// ControlDir is where an instance keeps its copy of the appliance's control
// API secrets (never committed: .gitignore).
const ControlDir = "control"

// ControlSecrets pre-creates the control API's key, certificate and token
// in the instance directory (once; later builds reuse them) and returns
// them as /perm files for lbd's state directory, so penctl knows the token
// and pins the certificate from the first contact, without trusting on
// first use. It also writes penctlFile, penctl's config for this
// appliance: address, token file and fingerprint.
func ControlSecrets(instanceDir, hostname, address, penctlFile string) (map[string][]byte, string, error) {
	dir := filepath.Join(instanceDir, ControlDir)
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, "", fmt.Errorf("control address %q: %v", address, err)
	}
	names := []string{hostname, "localhost", "127.0.0.1", "::1"}
	if host != hostname {
		names = append(names, host)
	}
	s, err := control.EnsureSecrets(dir, names)
	if err != nil {
		return nil, "", fmt.Errorf("control API secrets in %s: %w", dir, err)
	}
	files := map[string][]byte{}
	for _, name := range []string{control.KeyFile, control.CertFile, control.TokenFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, "", err
		}
		files["lbd/"+name] = b
	}
	rel, err := filepath.Rel(filepath.Dir(penctlFile), filepath.Join(dir, control.TokenFile))
	if err != nil {
		return nil, "", err
	}
	if err := penctl.WriteFile(penctlFile, penctl.File{Address: address, TokenFile: rel, Fingerprint: s.Fingerprint}); err != nil {
		return nil, "", err
	}
	return files, s.Fingerprint, nil
}
