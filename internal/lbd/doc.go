// Package lbd implements lbd's package main logic: it turns a configuration
// into running services, reloads without dropping connections, and serves
// Pen's control protocol through the shared command interpreter.
package lbd
