package lbd

import (
	"context"
	"fmt"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/dsrcheck"
)

// The DSR backend check of the control API (POST /api/v1/check, penctl
// check SERVICE): internal/dsrcheck run from the service's own interface,
// so that the operator of an appliance without a shell gets what `setup
// check` reports on a Linux host.

func (b apiBackend) CheckDSR(ctx context.Context, service string) (control.CheckReply, error) {
	o, err := b.d.checkOptions(service)
	if err != nil {
		return control.CheckReply{}, err
	}
	// Outside the daemon lock: the check waits for answers.
	rep, err := dsrcheck.Check(ctx, o)
	if err != nil {
		return control.CheckReply{}, err
	}
	verdict := "every backend is ready"
	if !rep.OK() {
		verdict = "some backends are not ready"
	}
	b.d.log.Printf("control: DSR check of service %s: %s", service, verdict)
	return control.CheckReply{OK: rep.OK(), Lines: rep.Lines()}, nil
}

// checkOptions are what the DSR check of a running service checks: its
// interface, VIP and port, and its backends.
func (d *Daemon) checkOptions(service string) (dsrcheck.Options, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg == nil || d.closed {
		return dsrcheck.Options{}, errClosed
	}
	for _, sc := range d.cfg.Services {
		if sc.Name != service {
			continue
		}
		if sc.Mode != config.ModeDSR {
			return dsrcheck.Options{}, fmt.Errorf("service %q: %w", service, control.ErrNotDSR)
		}
		o := dsrcheck.Options{Interface: sc.Interface, VIP: sc.Listen.Addr(), Port: sc.Listen.Port()}
		if sc.Protocol != config.TCP {
			o.Port = 0 // the probe is a TCP SYN
		}
		for _, be := range sc.Backends {
			if be.Used() {
				o.Backends = append(o.Backends, be.Address.Addr())
			}
		}
		return o, nil
	}
	return dsrcheck.Options{}, fmt.Errorf("%w %q", config.ErrNoService, service)
}
