package proxy

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// ConnLog is a service's request log (Pen's -l): one line per finished
// connection or UDP flow,
//
//	CLIENT-IP UNIX-TIME SERVER-IP SERVICE CLIENT-PORT SERVER-PORT TO-SERVER FROM-SERVER MILLISECONDS
//
// The first three fields are Pen's. The data path only queues a record; a
// goroutine formats and writes it, flushing each batch, so a crash loses at
// most what is queued (Pen buffers and loses lines) and a slow disk never
// stalls traffic: when the queue is full, records are dropped and counted.
type ConnLog struct {
	path    string
	ch      chan logRecord
	dropped atomic.Uint64
	mu      sync.Mutex // guards f for Reopen
	f       *os.File
	stop    chan struct{}
	done    chan struct{}
}

type logRecord struct {
	service        string
	client, server netip.AddrPort
	sent, recv     uint64
	start, end     time.Time
}

const logQueue = 4096

// OpenConnLog opens (appends to, creating mode 0640) a request log.
func OpenConnLog(path string) (*ConnLog, error) { return OpenConnLogIn("", path) }

// OpenConnLogIn opens path inside root: Pen's -j jail before lbd has
// chrooted into it. Reopen (after the chroot) opens path itself.
func OpenConnLogIn(root, path string) (*ConnLog, error) {
	open := path
	if root != "" {
		open = filepath.Join(root, filepath.Join("/", path))
	}
	f, err := os.OpenFile(open, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	l := &ConnLog{path: path, f: f, ch: make(chan logRecord, logQueue), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// Path returns the log file's path.
func (l *ConnLog) Path() string { return l.path }

// Dropped returns how many records were lost to a full queue.
func (l *ConnLog) Dropped() uint64 { return l.dropped.Load() }

func (l *ConnLog) record(r logRecord) {
	if l == nil {
		return
	}
	select {
	case l.ch <- r:
	default:
		l.dropped.Add(1)
	}
}

func (l *ConnLog) run() {
	defer close(l.done)
	w := bufio.NewWriter(nil)
	for {
		select {
		case r := <-l.ch:
			l.write(w, r)
		case <-l.stop:
			for {
				select {
				case r := <-l.ch:
					l.write(w, r)
				default:
					return
				}
			}
		}
	}
}

// write writes r and whatever else is queued (up to a batch), then flushes.
func (l *ConnLog) write(w *bufio.Writer, r logRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Reset(l.f)
	for n := 0; ; n++ {
		fmt.Fprintf(w, "%s %d %s %s %d %d %d %d %d\n",
			r.client.Addr(), r.end.Unix(), r.server.Addr(), r.service,
			r.client.Port(), r.server.Port(), r.sent, r.recv, r.end.Sub(r.start).Milliseconds())
		if n == logQueue {
			break
		}
		select {
		case r = <-l.ch:
			continue
		default:
		}
		break
	}
	w.Flush()
}

// Reopen closes and reopens the file, for log rotation (SIGHUP).
func (l *ConnLog) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Close writes what is queued and closes the file. Records that arrive
// later (from connections still finishing) are dropped.
func (l *ConnLog) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
