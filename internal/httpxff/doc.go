// Package httpxff rewrites a client's HTTP/1.x request stream on its way to
// a backend so that every request carries the client's address.
//
// A [Rewriter] follows the message framing of RFC 9112 across keep-alive and
// pipelined requests: request line and header fields up to the empty line,
// then a body delimited by Content-Length or by the chunked transfer coding
// (chunk sizes, extensions and trailer fields), then the next request. Each
// request head is re-emitted with CRLF line endings and with
//
//   - the client's address appended to X-Forwarded-For: the values of all of
//     the client's X-Forwarded-For lines are merged into one line that ends
//     with ", <client>" (or is just "<client>");
//   - X-Forwarded-Proto set to "http" or "https": any value sent by the
//     client is dropped;
//   - duplicate Content-Length lines folded into one canonical line.
//
// Header names are matched case-insensitively, and "_" matches "-" in the
// two forwarding headers, because CGI-style backends treat
// X_Forwarded_For as X-Forwarded-For.
//
// Bodies are never buffered: their bytes pass through as they arrive. Only an
// incomplete request head is held between calls to [Rewriter.Feed], up to the
// configured limit. After a CONNECT request, or a request that asks for a
// protocol upgrade (an Upgrade field, or "upgrade" in Connection), the rest of
// the connection passes through unchanged: the 101 answer is on the response
// side, which the rewriter does not see.
//
// Anything whose framing a backend might read differently is an error: an
// invalid or conflicting Content-Length, both Content-Length and
// Transfer-Encoding, a transfer coding other than a final "chunked",
// obs-folded lines, whitespace before a colon, bare CR or control characters
// in the head, and chunk lines not ended by CRLF. The proxy answers 400 and
// closes the connection. Unlike Pen's -H, which patched whichever recv()
// chunk happened to start with "GET ", nothing inside a body is ever
// rewritten, and the client cannot suppress the address it connected from.
//
// The package is pure: it reads and writes byte slices, never sockets.
package httpxff
