// Package sockmap is an experiment: relaying a proxied TCP connection in
// the kernel with a sockmap and an sk_skb verdict program.
package sockmap
