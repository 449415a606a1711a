package lbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/pen"
)

// Pen's plain-text control protocol: one command per connection, the reply
// is whatever comes back until lbd closes the socket. Unlike Pen, every
// client is served on its own goroutine with deadlines, so an idle or slow
// control client never blocks traffic or other clients.
const (
	maxPenCommand   = 4095 // Pen reads at most this much
	penReadTimeout  = 5 * time.Second
	penWriteTimeout = 10 * time.Second
	maxPenClients   = 16
)

// penControl is one control listener. Its goroutines, and those of the
// clients it accepted, are counted in Daemon.ctlWG; nothing waits for them
// while holding Daemon.mu, which their commands take.
type penControl struct {
	addr string
	ln   net.Listener
	slot chan struct{}
}

// ctlACL is the control ACL of the running config, read without a lock by
// each control connection. A nil list permits every client.
type ctlACL struct {
	list *acl.List
}

// allows reports whether a may use the control listener: no one before a
// config is committed (s is nil), everyone when the config names no ACL.
func (s *ctlACL) allows(a netip.Addr) bool { return s != nil && s.list.Allows(a) }

func newCtlACL(cfg *config.Config) *ctlACL { return namedCtlACL(cfg, cfg.Control.PenACL) }

// namedCtlACL is the control ACL named name: everyone when name is "",
// no one when the config has no such ACL (Validate refuses that; should it
// get here, permit no one).
func namedCtlACL(cfg *config.Config, name string) *ctlACL {
	if name == "" {
		return &ctlACL{}
	}
	a, ok := cfg.ACLs[name]
	if !ok {
		return &ctlACL{list: &acl.List{Rules: []acl.Rule{{Action: acl.Deny}}}}
	}
	return &ctlACL{list: &a}
}

// prepareControl opens the control listener cfg asks for, unless the running
// one already serves that address (a reload's prepare). It changes nothing:
// commit (called with Daemon.mu held, once nothing else can fail) puts cfg's
// control ACL and listener in place and closes the old listener without
// waiting for its clients; abort closes the listener it opened.
func (d *Daemon) prepareControl(cfg *config.Config) (commit, abort func(), err error) {
	want := cfg.Control.PenListen
	snap := newCtlACL(cfg)
	if d.penctl != nil && d.penctl.addr == want {
		return func() { d.penACL.Store(snap) }, func() {}, nil
	}
	var pc *penControl
	if want != "" {
		ln, err := listenPen(want)
		if err != nil {
			return nil, nil, fmt.Errorf("control %s: %w", want, err)
		}
		pc = &penControl{addr: want, ln: ln, slot: make(chan struct{}, maxPenClients)}
	}
	commit = func() {
		d.penACL.Store(snap) // before the new listener accepts anyone
		if d.penctl != nil {
			d.penctl.ln.Close() // its clients finish on their own (deadlines)
		}
		d.penctl = pc
		if pc != nil {
			d.servePenListener(pc)
			d.log.Printf("control: Pen protocol on %s", want)
		}
	}
	abort = func() {
		if pc != nil {
			pc.ln.Close() // a Unix socket's file goes with it
		}
	}
	return commit, abort, nil
}

// listenPen opens a control listener: a Unix socket for a path, else TCP.
func listenPen(addr string) (net.Listener, error) {
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, ".") {
		return net.Listen("tcp", addr)
	}
	// Like Pen, replace a stale socket file, but never anything else.
	if st, err := os.Lstat(addr); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(addr)
	}
	// The socket grants full control: owner only, from the start. Linux
	// creates the socket file with the mode of the socket's own inode
	// (masked by the umask), so set that before bind rather than chmod
	// the file after, which would leave it open to anyone for a moment.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("fchmod: %w", err)
		}
		return nil
	}}
	ln, err := lc.Listen(context.Background(), "unix", addr)
	if err != nil {
		return nil, err
	}
	// Refuse to serve from a socket anyone else can use, should a kernel
	// not create it with the socket inode's mode.
	if st, err := os.Lstat(addr); err != nil || st.Mode().Perm()&0o077 != 0 {
		ln.Close()
		if err == nil {
			err = fmt.Errorf("socket created with mode %v, want 0600", st.Mode().Perm())
		}
		return nil, err
	}
	return ln, nil
}

// servePenListener accepts control clients on pc until its listener closes.
func (d *Daemon) servePenListener(pc *penControl) {
	d.ctlWG.Add(1)
	go func() {
		defer d.ctlWG.Done()
		for {
			c, err := pc.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			select {
			case pc.slot <- struct{}{}:
			default:
				c.Close() // too many control clients at once
				continue
			}
			if !d.trackControl(c) {
				c.Close() // the daemon is closing
				<-pc.slot
				continue
			}
			d.ctlWG.Add(1)
			go func() {
				defer d.ctlWG.Done()
				defer func() { <-pc.slot }()
				defer d.untrackControl(c)
				d.servePen(c)
			}()
		}
	}()
}

// trackControl records a control connection so that Close can hang it up;
// false means the daemon is closing.
func (d *Daemon) trackControl(c net.Conn) bool {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.ctlClosed {
		return false
	}
	if d.ctlConns == nil {
		d.ctlConns = make(map[net.Conn]struct{})
	}
	d.ctlConns[c] = struct{}{}
	return true
}

func (d *Daemon) untrackControl(c net.Conn) {
	d.ctlMu.Lock()
	delete(d.ctlConns, c)
	d.ctlMu.Unlock()
}

// hangUpControl closes every control connection, idle or mid-command, and
// refuses new ones. It does not wait.
func (d *Daemon) hangUpControl() {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	d.ctlClosed = true
	for c := range d.ctlConns {
		c.Close()
	}
}

// servePen answers one control connection.
func (d *Daemon) servePen(c net.Conn) {
	defer c.Close()
	if !d.penAllowed(c.RemoteAddr()) {
		d.debugf(1, "control: refused %s (control ACL)", c.RemoteAddr())
		return
	}
	c.SetReadDeadline(time.Now().Add(penReadTimeout))
	line, err := readPenCommand(c)
	if err != nil {
		d.debugf(1, "control: %s: %v", c.RemoteAddr(), err)
		return
	}
	var out bytes.Buffer
	d.ExecPen(line, &out, false)
	c.SetWriteDeadline(time.Now().Add(penWriteTimeout))
	c.Write(out.Bytes())
}

// readPenCommand reads the first line of a control request: up to a newline,
// EOF, or Pen's 4095-byte limit.
func readPenCommand(r io.Reader) (string, error) {
	buf := make([]byte, maxPenCommand)
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if i := bytes.IndexAny(buf[:n], "\r\n"); i >= 0 {
			return string(buf[:i]), nil
		}
		if err != nil {
			// A full buffer is a command, whatever came with its last
			// bytes; so is an unterminated last line at EOF.
			if n == len(buf) || err == io.EOF && n > 0 {
				break
			}
			return "", err
		}
	}
	return string(buf[:n]), nil
}

// penAllowed checks a control client against the control ACL snapshot; it
// takes no lock.
func (d *Daemon) penAllowed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return true // Unix socket: file permissions guard it (Pen: always permitted)
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return d.penACL.Load().allows(ip)
}

// ExecPen runs one Pen command against the running configuration, applying
// it when it changes something. startup allows verbs that touch files. As
// Pen does, it writes errors to out with the command's output.
func (d *Daemon) ExecPen(line string, out io.Writer, startup bool) {
	if err := d.execPen(line, out, startup); err != nil {
		io.WriteString(out, err.Error())
		if !strings.HasSuffix(err.Error(), "\n") {
			io.WriteString(out, "\n")
		}
	}
}

// execPen is ExecPen, returning the command's error instead of writing it.
func (d *Daemon) execPen(line string, out io.Writer, startup bool) error {
	// Host names in the line are resolved first, outside the daemon lock:
	// a slow DNS server must not stall reloads and other control clients.
	hosts := pen.LookupHosts(line)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	in := &pen.Interp{Cfg: d.cfg.Clone(), RT: runtimeView{d}, ConfigFile: d.PenFile, Startup: startup, Validate: true, Hosts: hosts}
	if d.TOMLFile != "" {
		in.SaveTOML = d.saveTOML
	}
	changed, err := in.Exec(line, out)
	if err != nil {
		return err
	}
	if changed {
		return d.applyLocked(in.Cfg)
	}
	return nil
}
