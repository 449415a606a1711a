package lbd

import (
	"errors"
	"fmt"
	"html"
	"io"
	"os"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/pen"
)

// runtimeView gives the Pen interpreter the live state. Its methods run with
// Daemon.mu held (from ExecPen).
type runtimeView struct{ d *Daemon }

var _ pen.Runtime = runtimeView{}

func (v runtimeView) ServerStats(service string) []pen.ServerStat {
	if p, sc, ok := v.d.dsrByName(service); ok {
		// DSR: sx is bytes forwarded to the backend; replies bypass lbd.
		bs := backendStats(p, sc.Name)
		out := make([]pen.ServerStat, len(sc.Backends))
		for i, b := range sc.Backends {
			out[i].Sent = bs[b.Address.Addr()].Bytes
			out[i].Health = v.d.healthWord(sc, b)
		}
		return out
	}
	r, err := v.d.service(service)
	if err != nil {
		return nil
	}
	st := r.pool.Stats(time.Now())
	out := make([]pen.ServerStat, len(st))
	for i, s := range st {
		out[i] = pen.ServerStat{Conns: s.Conns, Sent: s.Sent, Recv: s.Recv}
		if i < len(r.cfg.Backends) {
			out[i].Health = v.d.healthWord(r.cfg, r.cfg.Backends[i])
		}
	}
	return out
}

func (v runtimeView) Recent(service string, within time.Duration) []pen.ClientStat {
	r, err := v.d.service(service)
	if err != nil {
		return nil
	}
	cs := r.pool.Recent(time.Now(), within)
	out := make([]pen.ClientStat, len(cs))
	for i, c := range cs {
		out[i] = pen.ClientStat{Addr: c.Addr, Connects: int(c.Connects), Sent: c.Sent, Recv: c.Recv}
	}
	return out
}

func (v runtimeView) Blacklist(service string, server int, d time.Duration) error {
	if p, sc, ok := v.d.dsrByName(service); ok {
		if server < 0 || server >= len(sc.Backends) {
			return fmt.Errorf("no server %d", server)
		}
		a := sc.Backends[server].Address.Addr()
		p.mu.Lock()
		if d > 0 {
			p.blacklist[a] = time.Now().Add(d)
		} else {
			delete(p.blacklist, a)
		}
		p.mu.Unlock()
		p.fwd.Refresh() // its flows move now
		return nil
	}
	r, err := v.d.service(service)
	if err != nil {
		return err
	}
	if server < 0 || server >= len(r.cfg.Backends) {
		return fmt.Errorf("no server %d", server)
	}
	r.pool.SetBlacklist(server, d, time.Now())
	return nil
}

func (v runtimeView) StatusHTML(service string, w io.Writer) error {
	if p, sc, ok := v.d.dsrByName(service); ok {
		return dsrStatusHTML(p, sc, func(state string, b config.Backend) string { return v.d.healthStateHTML(state, sc, b) }, w)
	}
	r, err := v.d.service(service)
	if err != nil {
		return err
	}
	now := time.Now()
	st := r.pool.Stats(now)
	c := r.svc.Counters()
	fmt.Fprintf(w, "<html>\n<head>\n<title>Pen status page</title>\n</head>\n<body>\n")
	fmt.Fprintf(w, "<h1>lbd status: %s</h1>\n", html.EscapeString(r.cfg.Name))
	fmt.Fprintf(w, "Time %s, %d servers, %d current<p>\n", now.Format("2006-01-02 15:04:05"), len(st), c.Active)
	fmt.Fprintf(w, "<table border=1>\n<tr><th>server</th><th>address</th><th>status</th><th>port</th><th>connections</th><th>max soft</th><th>max hard</th><th>sent</th><th>received</th><th>weight</th><th>prio</th></tr>\n")
	for i, s := range st {
		b := r.cfg.Backends[i]
		status := proxyBackendState(s, now)
		if status == "blacklisted" {
			status += " until " + s.BlacklistedUntil.Format("15:04:05")
		}
		status = v.d.healthStateHTML(status, r.cfg, b)
		fmt.Fprintf(w, "<tr><td>%d</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>\n",
			i, b.Address.Addr(), status, b.Address.Port(), s.Conns, b.Max, b.Hard, s.Sent, s.Recv, b.Weight, b.Prio)
	}
	fmt.Fprintf(w, "</table>\n<p>Connections: %d active, %d accepted, %d refused</p>\n", c.Active, c.Accepted, c.Refused)
	fmt.Fprintf(w, "<p>Local errors (this host out of descriptors or buffers): %d; UDP datagrams over the flow limits: %d</p>\n</body>\n</html>\n", c.LocalErrors, c.FlowLimited)
	return nil
}

func (v runtimeView) Pid() int { return os.Getpid() }

func (v runtimeView) Exit() error {
	if !v.d.cfg.Control.AllowExit {
		return errors.New("exit is not enabled")
	}
	v.d.exitOnce.Do(func() { close(v.d.exit) })
	return nil
}
