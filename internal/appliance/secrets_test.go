package appliance

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestControlSecrets(t *testing.T) {
	inst := t.TempDir()
	pc := filepath.Join(inst, "penctl.json")
	files, fp, err := ControlSecrets(inst, "nib", "nib:9443", pc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lbd/control.key", "lbd/control.crt", "lbd/control.token"} {
		if len(files[name]) == 0 {
			t.Errorf("%s missing from /perm", name)
		}
		st, err := os.Stat(filepath.Join(inst, ControlDir, filepath.Base(name)))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("instance copy of %s: %v %v, want 0600", name, st.Mode(), err)
		}
	}
	// The fingerprint is the certificate's.
	blk, _ := pem.Decode(files["lbd/control.crt"])
	if blk == nil {
		t.Fatal("control.crt is not PEM")
	}
	sum := sha256.Sum256(blk.Bytes)
	if hex.EncodeToString(sum[:]) != fp {
		t.Errorf("fingerprint %s is not the certificate's", fp)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || cert.VerifyHostname("nib") != nil {
		t.Errorf("certificate not for nib: %v", err)
	}
	// penctl's file names the address, the token and the fingerprint.
	b, err := os.ReadFile(pc)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Address, Token_file, Fingerprint string }
	if err := json.Unmarshal(b, &f); err != nil || f.Address != "nib:9443" || f.Fingerprint != fp || f.Token_file != filepath.Join(ControlDir, "control.token") {
		t.Errorf("penctl file %s: %+v %v", b, f, err)
	}
	// A second build reuses the secrets.
	files2, fp2, err := ControlSecrets(inst, "nib", "127.0.0.1:9443", filepath.Join(inst, "penctl-vm.json"))
	if err != nil || fp2 != fp || string(files2["lbd/control.token"]) != string(files["lbd/control.token"]) {
		t.Errorf("second build: new secrets (%v)", err)
	}
}
