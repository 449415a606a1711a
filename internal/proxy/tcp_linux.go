package proxy

import (
	"fmt"
	"log"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/lograte"
)

// The TCP engine: each loop owns an epoll set. Every socket is registered
// once, edge-triggered for input and output, and its readiness is tracked
// here, so relaying never changes the epoll set: a proxied connection costs
// two epoll_ctl calls in its life. Small reads are copied through the loop's
// buffer; bulk transfers switch to splice(2) through pipes taken from a
// per-loop pool only while data is in flight, so an idle connection costs two
// sockets and one small struct. A loop parks on Go's netpoller (its epoll fd
// is itself pollable), so it never holds a scheduler thread hostage and the
// process's other goroutines (UDP, TLS, control) stay responsive.
//
// Client sockets get TCP keepalive (clientKeepAlive, inherited from the
// listening socket), so a client gone without a trace is found; once one
// direction of a connection has ended, the other is cut after
// halfCloseTimeout without traffic.

const (
	maxSplice = 1 << 16 // bytes moved per splice call (one pipe's worth)
	copyBuf   = 16 << 10
	// smallSplices splices of less than smallSplice bytes in a row end a
	// bulk transfer.
	smallSplice  = 4 << 10
	smallSplices = 3
	maxEvents    = 256
	maxReads     = 16 // reads per direction before other sessions get a turn
	maxAccepts   = 32 // accepts per listener event
	maxPipePool  = 64
	sweepEvery   = 250 * time.Millisecond
	// yieldEvery is how often a busy loop lets the rest of the process
	// run: often when it shares the P with it, and only as often as the
	// runtime's monitor needs (it acts after 10ms) when a P is spare.
	yieldEvery      = time.Millisecond
	spareYieldEvery = 5 * time.Millisecond
	busyWaitMS      = 5 // below the 10ms after which the runtime takes a P back
	idleAfter       = 100 * time.Millisecond
	// acceptBackoff is how long a listener stays out of a loop's epoll set
	// after accept failed for lack of descriptors or memory: the listener
	// is level-triggered, so leaving it in would spin on the same error.
	// A connection closing on the loop ends the pause early.
	acceptBackoff = 100 * time.Millisecond
	// waitBackoff is the pause after an epoll_wait error other than EINTR
	// (a broken epoll set), so that a lasting error does not spin.
	waitBackoff = 10 * time.Millisecond
)

type kind uint8

const (
	kindListener kind = iota + 1
	kindClient
	kindBackend
	kindWake
)

// endpoint is one socket of a relayed connection (or a listener).
type endpoint struct {
	kind kind
	fd   int
	svc  *Service // listeners
	sess *tcpConn
	peer *endpoint
	// pr, pw hold bytes read from this endpoint that its peer has not taken
	// yet; -1 when no pipe is attached.
	pr, pw int
	buf    []byte // copy mode: bytes read from this endpoint not yet written
	pend   int    // bytes waiting in the pipe or buf
	splice bool   // bulk transfer: relay with splice(2)
	small  uint8  // small splices in a row
	eof    bool   // read side finished
	// readable and writable track edge-triggered readiness: set by events,
	// cleared when a read or write finds the socket drained or full.
	readable, writable bool
	hup                bool   // FIN or error signalled: read to the end
	gen                uint32 // registration generation (stale events)
	off                bool   // listener: out of the epoll set (accept back-off)
}

type state uint8

const (
	connecting state = iota + 1
	established
)

// tcpConn is a relayed connection: the shared session (backend choice and
// bookkeeping) and the engine's sockets and state.
type tcpConn struct {
	session
	client, backend endpoint
	state           state
	deadline        time.Time // connect deadline
	last            time.Time // last traffic
	bytes           [2]uint64 // bytes to and from the backend
	prev, next      *tcpConn  // the loop's connection list
	queued          bool      // on the loop's ready list
}

// Engine runs the TCP loops.
type Engine struct {
	loops []*loop
	mu    sync.Mutex
	lfds  map[*Service]int
	logf  atomic.Pointer[func(format string, args ...any)]
}

// SetLogf sets where the engine reports its own faults (an epoll_wait
// error), rate-limited; by default the standard logger. Per-service
// messages go to the service's loggers.
func (e *Engine) SetLogf(f func(format string, args ...any)) {
	if f == nil {
		f = log.Printf
	}
	e.logf.Store(&f)
}

type loop struct {
	epfd      int
	file      *os.File
	rc        syscall.RawConn
	wakefd    int
	events    [maxEvents]unix.EpollEvent
	buf       [copyBuf]byte
	fds       []*endpoint // by file descriptor
	gen       uint32      // last registration generation handed out
	ready     []*tcpConn  // connections with input left after their turn
	pipes     [][2]int
	now       time.Time
	head      tcpConn // sentinel of the connection list
	nsess     int
	lastSw    time.Time
	lastYield time.Time
	lastEvent time.Time
	loops     int  // loops in the engine
	spare     bool // GOMAXPROCS exceeds loops: a P is free for the rest
	// deadline is when a parked wait wakes up for the sweep.
	deadline time.Time
	// disarmed are listeners out of the epoll set until rearmAt, after
	// accept failed for lack of resources.
	disarmed []*endpoint
	rearmAt  time.Time
	// halfClose is halfCloseTimeout; tests shorten it.
	halfClose time.Duration
	eng       *Engine
	waitLog   *lograte.Limiter
	// Test seams: replace the epoll_wait and epoll_ctl(ADD) of connection
	// sockets when set. Set them on the loop's goroutine (with do).
	waitHook func(epfd int, events []unix.EpollEvent, msec int) (int, error)
	ctlHook  func(epfd, op, fd int, ev *unix.EpollEvent) error

	mu     sync.Mutex
	cmds   []func()
	closed bool
	done   chan struct{}
}

// NewEngine starts n loops (n < 1 means 1).
func NewEngine(n int) (*Engine, error) {
	if n < 1 {
		n = 1
	}
	e := &Engine{lfds: make(map[*Service]int)}
	e.SetLogf(nil)
	for range n {
		l, err := newLoop()
		if l != nil {
			l.loops = n
			l.spare = runtime.GOMAXPROCS(0) > n
			l.eng = e
		}
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e, nil
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{epfd: epfd, wakefd: wfd, done: make(chan struct{}), waitLog: lograte.New(logEvery), halfClose: halfCloseTimeout}
	l.head.prev, l.head.next = &l.head, &l.head
	l.file = os.NewFile(uintptr(epfd), "epoll")
	if l.rc, err = l.file.SyscallConn(); err != nil {
		l.file.Close()
		unix.Close(wfd)
		return nil, err
	}
	l.set(&endpoint{kind: kindWake, fd: wfd})
	if err := l.ctl(unix.EPOLL_CTL_ADD, wfd, unix.EPOLLIN); err != nil {
		l.file.Close()
		unix.Close(wfd)
		return nil, err
	}
	return l, nil
}

// Listen opens svc's listening socket and serves it on every loop.
func (e *Engine) Listen(svc *Service) error {
	o := svc.Options()
	fd, err := listenTCP(o.Listen, o.Backlog)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	e.mu.Lock()
	e.lfds[svc] = fd
	e.mu.Unlock()
	for _, l := range e.loops {
		errc := make(chan error, 1)
		l.do(func() {
			l.set(&endpoint{kind: kindListener, fd: fd, svc: svc})
			errc <- l.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
		})
		if err := <-errc; err != nil {
			e.Unlisten(svc)
			return fmt.Errorf("listen on %s: epoll: %w", o.Listen, err)
		}
	}
	return nil
}

// Unlisten stops accepting for svc; its established connections go on.
func (e *Engine) Unlisten(svc *Service) {
	e.mu.Lock()
	fd, ok := e.lfds[svc]
	delete(e.lfds, svc)
	e.mu.Unlock()
	if !ok {
		return
	}
	var wg sync.WaitGroup
	for _, l := range e.loops {
		wg.Add(1)
		l.do(func() {
			defer wg.Done()
			if fd < len(l.fds) && l.fds[fd] != nil {
				unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
				l.fds[fd] = nil
			}
		})
	}
	wg.Wait()
	unix.Close(fd)
}

// Close stops accepting everywhere and closes every connection.
func (e *Engine) Close() {
	e.mu.Lock()
	svcs := make([]*Service, 0, len(e.lfds))
	for s := range e.lfds {
		svcs = append(svcs, s)
	}
	e.mu.Unlock()
	for _, s := range svcs {
		e.Unlisten(s)
	}
	for _, l := range e.loops {
		l.do(func() {
			for s := l.head.next; s != &l.head; {
				n := s.next
				l.closeSession(s)
				s = n
			}
			l.closed = true
		})
		<-l.done
	}
}

// do runs f on the loop's goroutine.
func (l *loop) do(f func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, f)
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

func (l *loop) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

// register adds a connection socket, edge-triggered, for its whole life.
// The event carries a generation so that an event for a closed socket whose
// number was reused within the same batch is recognised and dropped.
func (l *loop) register(ep *endpoint) error {
	l.gen++
	ep.gen = l.gen
	l.set(ep)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(ep.fd), Pad: int32(ep.gen)}
	if l.ctlHook != nil {
		return l.ctlHook(l.epfd, unix.EPOLL_CTL_ADD, ep.fd, &ev)
	}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ep.fd, &ev)
}

// disarm takes a listener out of the loop's epoll set for acceptBackoff.
// (EPOLL_CTL_MOD cannot change an EPOLLEXCLUSIVE registration, so it is
// deleted and added again.)
func (l *loop) disarm(ep *endpoint) {
	if ep.off {
		return
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ep.fd, nil)
	ep.off = true
	if len(l.disarmed) == 0 {
		l.rearmAt = l.now.Add(acceptBackoff)
	}
	l.disarmed = append(l.disarmed, ep)
}

// rearm puts the disarmed listeners back once their back-off is over.
// A listener closed meanwhile (Unlisten) is no longer in l.fds.
func (l *loop) rearm() {
	if len(l.disarmed) == 0 || l.now.Before(l.rearmAt) {
		return
	}
	eps := l.disarmed
	l.disarmed = nil
	for _, ep := range eps {
		if ep.fd >= len(l.fds) || l.fds[ep.fd] != ep {
			continue
		}
		if err := l.ctl(unix.EPOLL_CTL_ADD, ep.fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
			ep.svc.warn(ep.svc.acceptLog, "accept: re-arming the listener: %v", err)
			l.disarmed = append(l.disarmed, ep) // try again after another pause
			l.rearmAt = l.now.Add(acceptBackoff)
			continue
		}
		ep.off = false
	}
}

func (l *loop) set(ep *endpoint) {
	for ep.fd >= len(l.fds) {
		l.fds = append(l.fds, make([]*endpoint, len(l.fds)+256)...)
	}
	l.fds[ep.fd] = ep
}

func (l *loop) run() {
	defer close(l.done)
	defer l.file.Close()
	defer unix.Close(l.wakefd)
	for !l.closed {
		n := l.wait()
		l.now = time.Now()
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd >= len(l.fds) || l.fds[fd] == nil {
				continue
			}
			ep := l.fds[fd]
			if ep.sess != nil && uint32(ev.Pad) != ep.gen {
				continue // for a socket closed earlier in this batch
			}
			l.handle(ep, ev.Events)
		}
		l.runReady()
		l.rearm()
		if l.now.Sub(l.lastSw) >= sweepEvery {
			l.sweep()
		}
		every := yieldEvery
		if l.spare {
			every = spareYieldEvery
		}
		if l.now.Sub(l.lastYield) >= every {
			l.lastYield = l.now
			l.yield()
		}
	}
}

// yield lets the rest of the process run now and then: a loop that never
// parks holds its P and looks stuck to the runtime's monitor, which then
// preempts it or, mid system call, takes its P away. With a spare P,
// runtime.Gosched is right: it starts a new time slice (a goroutine woken
// from a sleep inherits the old one, and the monitor keeps counting), and
// the spare P polls the network. Without one, Gosched would requeue the
// loop ahead of the netpoller and starve goroutines waiting for the
// network, so the loop parks briefly instead.
func (l *loop) yield() {
	if l.spare {
		runtime.Gosched()
	} else {
		time.Sleep(time.Nanosecond)
	}
}

// wait collects ready events. While traffic flows and the process has a
// spare P for its other goroutines (GOMAXPROCS above the number of loops),
// it blocks in epoll_wait for at most busyWait: a goroutine in a system
// call keeps its P busy, so the runtime's monitor neither takes the P away
// (it does after 10ms) nor falls into the idle sleep that the loop's next
// system call would wake it from, which on a busy core costs a context
// switch per request. Otherwise, and after idleAfter without events, it
// parks on the netpoller (the epoll fd is readable while events are
// pending) until events arrive or the next sweep is due, using no CPU and
// no P.
func (l *loop) wait() int {
	if len(l.ready) > 0 {
		return l.epollWait(0)
	}
	if l.spare && l.now.Sub(l.lastEvent) < idleAfter {
		n := l.epollWait(busyWaitMS)
		if n > 0 {
			l.lastEvent = l.now
		}
		return n
	}
	if n := l.epollWait(0); n > 0 {
		l.lastEvent = l.now
		return n
	}
	l.spare = runtime.GOMAXPROCS(0) > l.loops // re-read while idle
	if now := time.Now(); !now.Before(l.deadline) {
		l.deadline = now.Add(sweepEvery)
		l.file.SetReadDeadline(l.deadline)
	}
	if len(l.disarmed) > 0 && l.rearmAt.Before(l.deadline) {
		l.deadline = l.rearmAt // wake up to re-arm a listener
		l.file.SetReadDeadline(l.deadline)
	}
	var n int
	l.rc.Read(func(uintptr) bool {
		n = l.epollWait(0)
		return n > 0
	})
	if n > 0 {
		l.lastEvent = time.Now()
	}
	return n
}

// epollWait returns the number of events ready, retrying on EINTR. Any
// other error (the epoll set itself is broken) is logged, rate-limited,
// and reported as no events after a short pause, so the loop goes on (its
// sweeps still close timed-out sessions) instead of crashing the process
// or spinning.
func (l *loop) epollWait(ms int) int {
	for {
		var n int
		var err error
		if l.waitHook != nil {
			n, err = l.waitHook(l.epfd, l.events[:], ms)
		} else {
			n, err = unix.EpollWait(l.epfd, l.events[:], ms)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.waitLog.Logf(*l.eng.logf.Load(), "proxy: epoll_wait: %v", err)
			time.Sleep(waitBackoff)
			return 0
		}
		return n
	}
}
