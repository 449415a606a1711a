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
// incomplete request head, or what the client sends while the answer to an
// upgrade is awaited, is held between calls to [Rewriter.Feed], up to the
// configured limit; [Rewriter.InHead] tells a proxy when a client is in the
// middle of a head, to bound the time it may take.
//
// A CONNECT request, or one that asks for a protocol upgrade (an Upgrade
// field, or "upgrade" in Connection), is framed like any other, body
// included. Whether the protocol then switched is up to the backend's answer,
// and a backend may ignore Upgrade and keep reading HTTP/1 requests; what the
// client sends next cannot tell, since a client can send anything. So the
// backend's answer decides, as it does for the backend:
//
//   - the [Responses] of a Rewriter follows the backend's responses, in
//     order, to the requests the Rewriter passed on: status line,
//     Content-Length, Transfer-Encoding and chunked framing (a HEAD request,
//     1xx, 204 and 304 answers have no body), so that no response body is
//     ever taken for the answer;
//   - after a CONNECT or upgrade request, the Rewriter waits
//     ([Rewriter.Waiting]) and holds what the client sends, up to the head
//     size limit, until the follower has the answer to that request;
//   - a 101 to a request that asked for an upgrade, or a 2xx to a CONNECT,
//     switched the protocol: the rest of the connection, held bytes
//     included, passes through unchanged in both directions;
//   - any other final answer did not: the held bytes and all that follows
//     are parsed and rewritten as requests, and what is not a valid request
//     (a WebSocket frame, a TLS record, a request line a lenient backend
//     would read) is rejected.
//
// A response stream the follower cannot follow (malformed, a body that ends
// only at the close, a 101 nobody asked for, a response after which the
// backend closes, more than 64 requests in flight) or that ends (the proxy
// calls [Responses.Close]) answers every CONNECT and upgrade request from
// then on as refused. A client thus cannot send an ignored upgrade request
// to get later requests past the rewriter, nor a backend's response body
// pass for a 101.
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
// The package is pure: it reads and writes byte slices, never sockets. A
// Rewriter and its Responses may be fed from two goroutines (one per
// direction); a proxy that sees Waiting stops reading the client until
// [Responses.Feed] or [Responses.Close] reports the answer settled, then
// calls [Rewriter.Resume].
package httpxff
