package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestIsLocalError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.EMFILE, true},
		{syscall.ENFILE, true},
		{syscall.ENOBUFS, true},
		{syscall.ENOMEM, true},
		{syscall.EADDRNOTAVAIL, true},
		{os.NewSyscallError("socket", syscall.EMFILE), true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, true},
		{fmt.Errorf("connect backend 1: %w", syscall.ENFILE), true},
		{hostError{syscall.ENOSPC}, true},
		{fmt.Errorf("epoll: %w", hostError{syscall.EPERM}), true},
		{syscall.ENOSPC, false},
		{syscall.ECONNREFUSED, false},
		{syscall.ETIMEDOUT, false},
		{syscall.EHOSTUNREACH, false},
		{errors.New("EMFILE"), false},
		{nil, false},
	} {
		if got := isLocalError(tc.err); got != tc.want {
			t.Errorf("isLocalError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
