// Package benchkit is what lbd's benchmark programs share: child processes
// in their own process groups, /proc readings, and tool installation.
package benchkit
