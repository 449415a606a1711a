package proxy

import (
	"errors"
	"syscall"
)

// isLocalError reports whether err is this host running out of something
// (descriptors, buffers, memory, source ports) rather than a backend failing.
// Such an error closes the one client that hit it and never touches a
// backend's state: blacklisting a healthy backend because lbd ran out of file
// descriptors turns a short burst into an outage.
func isLocalError(err error) bool {
	var h hostError
	if errors.As(err, &h) {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL:
		return true
	}
	return false
}

// hostError marks an error as this host's own (isLocalError) whatever it
// is: the engine's epoll set refusing a socket, say.
type hostError struct{ err error }

func (e hostError) Error() string { return e.err.Error() }
func (e hostError) Unwrap() error { return e.err }
