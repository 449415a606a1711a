// Package compat holds loopback tests that run Pen's testsuite cases against lbd and against Debian's pen as an oracle.
package compat
