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
// configured limit.
//
// A CONNECT request, or one that asks for a protocol upgrade (an Upgrade
// field, or "upgrade" in Connection), is framed like any other, body
// included. Whether the protocol then switched is up to the backend's answer
// (101, or 2xx to CONNECT), which the rewriter does not see, and a backend
// may ignore Upgrade and keep reading HTTP/1 requests. So the rewriter looks
// at what the client sends next, holding it up to the head size limit:
//
//   - empty lines (CR, LF) are held, as a backend may skip them;
//   - a first byte that cannot start a request line (not a token character:
//     a WebSocket frame, a TLS record) means the protocol switched;
//   - so does a control byte other than HTAB, VT, FF or CR in the first line,
//     which no request line holds (binary protocols);
//   - a first line that is a valid HTTP/1.x request line is a request, parsed
//     and rewritten as usual; a malformed one that names an HTTP/1 version
//     (such as "GET / http/1.1", or one with doubled spaces) is rejected
//     rather than passed through to a backend that might be more lenient;
//   - any other first line ("PRI * HTTP/2.0", a text protocol) means the
//     protocol switched;
//   - reaching the limit with only empty lines, or within a first line free
//     of such control bytes, is rejected as a head too large, since a backend
//     with a larger limit could read it as a request.
//
// Once the protocol switched, the rest of the connection, held bytes
// included, passes through unchanged. Otherwise the next request may ask for
// an upgrade again, with the same rule. A client thus cannot send an ignored
// upgrade request to get later requests past the rewriter.
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
