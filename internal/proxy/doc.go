// Package proxy is lbd's userspace L4 data path: a splice-based epoll engine
// for TCP, a goroutine path for TLS termination and HTTP header rewriting,
// and per-flow UDP relaying.
package proxy
