// Package acl implements Pen-compatible client access lists: ordered
// permit/deny rules over address prefixes, first match wins.
package acl
