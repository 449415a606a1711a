// Package acl implements Pen-compatible client access lists: ordered
// permit/deny rules over address prefixes, first match wins.
//
// It is the one ACL representation of nib: config.ACL and config.Rule are
// List and Rule, [acl] rules in the file are read by ParseRule and written
// by Rule.String, Pen's "acl N ..." verb is read by ParsePen and written by
// Rule.PenString, and List.Allows is the matcher for clients, the control
// listener, the DSR tarpit and config's own checks.
package acl
