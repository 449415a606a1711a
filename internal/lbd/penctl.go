package lbd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nib-lb/nib/config"
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

type penControl struct {
	addr string
	ln   net.Listener
	slot chan struct{}
	wg   sync.WaitGroup
}

// applyControl starts, keeps or replaces the Pen control listener.
func (d *Daemon) applyControl(cfg *config.Config) error {
	want := cfg.Control.PenListen
	if d.penctl != nil && d.penctl.addr == want {
		return nil
	}
	var pc *penControl
	if want != "" {
		var err error
		if pc, err = d.listenPen(want); err != nil {
			return fmt.Errorf("control %s: %w", want, err)
		}
	}
	if d.penctl != nil {
		d.penctl.close()
	}
	d.penctl = pc
	if pc != nil {
		d.log.Printf("control: Pen protocol on %s", want)
	}
	return nil
}

func (d *Daemon) listenPen(addr string) (*penControl, error) {
	network := "tcp"
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ".") {
		network = "unix"
		// Like Pen, replace a stale socket file, but never anything else.
		if st, err := os.Lstat(addr); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(addr)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		// The socket grants full control: owner only.
		if err := os.Chmod(addr, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
	}
	pc := &penControl{addr: addr, ln: ln, slot: make(chan struct{}, maxPenClients)}
	pc.wg.Add(1)
	go func() {
		defer pc.wg.Done()
		for {
			c, err := ln.Accept()
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
			pc.wg.Add(1)
			go func() {
				defer pc.wg.Done()
				defer func() { <-pc.slot }()
				d.servePen(c)
			}()
		}
	}()
	return pc, nil
}

func (pc *penControl) close() {
	pc.ln.Close()
	pc.wg.Wait()
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
			if err == io.EOF && n > 0 {
				break
			}
			return "", err
		}
	}
	return string(buf[:n]), nil
}

func (d *Daemon) penAllowed(a net.Addr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	name := d.cfg.Control.PenACL
	if name == "" {
		return true
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return true // Unix socket: file permissions guard it (Pen: always permitted)
	}
	l, ok := d.cfg.ACLs[name]
	if !ok {
		return false
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return toACL(l).Allows(ip.Unmap())
}

// ExecPen runs one Pen command against the running configuration, applying
// it when it changes something. startup allows verbs that touch files.
func (d *Daemon) ExecPen(line string, out io.Writer, startup bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	in := &pen.Interp{Cfg: d.cfg.Clone(), RT: runtimeView{d}, ConfigFile: d.PenFile, Startup: startup, AllowWritePaths: startup, Validate: true}
	if d.TOMLFile != "" {
		in.SaveTOML = func(c *config.Config) error { return config.Save(d.TOMLFile, c) }
	}
	changed, err := in.Exec(line, out)
	if err != nil {
		io.WriteString(out, err.Error())
		if !strings.HasSuffix(err.Error(), "\n") {
			io.WriteString(out, "\n")
		}
		return
	}
	if changed {
		if err := d.applyLocked(in.Cfg); err != nil {
			fmt.Fprintf(out, "%v\n", err)
		}
	}
}
