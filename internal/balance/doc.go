// Package balance chooses a backend for each new client connection with
// Pen's algorithms (tracking, prio, weight, hash, round-robin, failover) plus
// weighted Maglev consistent hashing.
package balance
