package control

import (
	"net"
	"net/netip"
	"sync"
)

// Connection limits: a client that opens many connections (each one is a
// goroutine and a TLS handshake) is refused beyond maxPerSource, and the
// server as a whole holds at most maxConns. Connections over a limit are
// closed as soon as they are accepted.
const (
	maxConns     = 256
	maxPerSource = 16
)

// limitListener enforces the connection limits. Its table only holds
// sources with open connections, so it is bounded by maxConns.
type limitListener struct {
	net.Listener
	mu    sync.Mutex
	per   map[netip.Addr]int
	total int
}

func newLimitListener(ln net.Listener) *limitListener {
	return &limitListener{Listener: ln, per: make(map[netip.Addr]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var key netip.Addr
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			key = sourceKey(ap.Addr())
		}
		l.mu.Lock()
		ok := l.total < maxConns && l.per[key] < maxPerSource
		if ok {
			l.total++
			l.per[key]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l, key: key}, nil
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	key  netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.total--
		if c.l.per[c.key]--; c.l.per[c.key] <= 0 {
			delete(c.l.per, c.key)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
