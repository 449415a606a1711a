package penctl

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/control"
)

// ctlBackend is a stand-in for lbd behind the real control server. The
// embedded interface keeps this test compiling when control.Backend gains
// methods penctl does not use.
type ctlBackend struct {
	control.Backend
	reloadErr error
}

func (b *ctlBackend) Pen(cmd string) (string, error) { return "pen: " + cmd + "\n", nil }
func (b *ctlBackend) Status() control.Status {
	return control.Status{Version: "test", Services: []control.ServiceStatus{{Name: "web", Listen: ":80",
		Backends: []control.BackendStatus{{Index: 0, Address: "10.0.0.9:80", State: "ok", Sent: 99}}}}}
}
func (b *ctlBackend) ConfigTOML() ([]byte, error) { return []byte("# toml\n"), nil }
func (b *ctlBackend) Write() error                { return nil }
func (b *ctlBackend) Reload() error               { return b.reloadErr }

// TestControlServer runs penctl against internal/control's server: the
// two sides of the contract agree.
func TestControlServer(t *testing.T) {
	dir := t.TempDir()
	sec, err := control.EnsureSecrets(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	be := &ctlBackend{reloadErr: errors.New("lbd.toml:2:3: bad")}
	srv := control.New(control.Options{Backend: be, Secrets: sec, Logf: t.Logf})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	cfg := filepath.Join(dir, "penctl.json")
	os.WriteFile(cfg, []byte(`{"address":"`+addr+`","token_file":"`+control.TokenFile+`"}`), 0o600)

	r := runWith(nil, "-config", cfg, "status")
	expect(t, r, 3, nil, []string{sec.Fingerprint, "-trust"})
	expect(t, runWith(nil, "-config", cfg, "-trust"), 0, []string{sec.Fingerprint}, nil)
	expect(t, runWith(nil, "-config", cfg, "status"), 0, []string{"10.0.0.9:80", "99"}, nil)
	expect(t, runWith(nil, "-config", cfg, "server", "0", "weight", "2"), 0, []string{"pen: server 0 weight 2\n"}, nil)
	expect(t, runWith(nil, "-config", cfg, "bogus", "1"), 1, nil, []string{`unknown verb "bogus"`, " servers ", "penctl help"})
	expect(t, runWith(nil, "-config", cfg, "config"), 0, []string{"# toml"}, nil)
	expect(t, runWith(nil, "-config", cfg, "config", "-json"), 0, []string{"{}"}, nil)
	expect(t, runWith(nil, "-config", cfg, "write"), 0, []string{"write: ok"}, nil)
	expect(t, runWith(nil, "-config", cfg, "reload"), 1, nil, []string{"reload rejected", "lbd.toml:2:3: bad"})
	r = runWith(map[string]string{"NIB_TOKEN": "wrong"}, "-config", cfg, "status")
	expect(t, r, 3, nil, []string{"refused the token"})
	if strings.Contains(r.stderr, sec.Token) {
		t.Error("token shown")
	}
}
