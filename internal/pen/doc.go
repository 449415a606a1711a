// Package pen speaks Pen's command line, config verbs and control protocol.
//
// It turns Pen's invocation (ParseArgs) into a typed config.Config with one
// service named "pen", and interprets Pen's verbs (Interp.Exec) for -o/-O,
// the -F file, include, and the plain-text control socket. WriteConfig
// emits Pen's "write" format, which Exec reads back to the same config.
//
// The files follow what they own: args.go Pen's command line (ParseArgs,
// Usage), toml.go its TOML translation (PrintTOML), interp.go the
// interpreter (Interp, Exec, ExecFile), verbs.go the table of verbs with
// the one dispatch and permission gate, handlers.go the verbs' handlers,
// hosts.go the DNS lookups done before Exec, write.go Pen's write format
// (WriteConfig), client.go the control protocol's client (Send).
//
// Pen is GPL: this package re-implements the behaviour and the output
// formats described in shared/reference/pen.md; it holds no Pen code.
//
// # Deliberate differences from Pen
//
//   - A server without an explicit weight has weight 1 (Pen: 0). With Pen,
//     -W and servers without weights resets every connection; with nib, -W
//     and unweighted servers is plain least-connections. An explicit weight
//     0 drains the server.
//   - -C PORT binds 127.0.0.1:PORT (Pen: 0.0.0.0).
//   - ACL list 0 is Pen's default for clients, servers and the control
//     socket alike. nib keeps it only as the control default:
//     "client_acl 0" and "server N acl 0" mean "no ACL", so control-only
//     entries in list 0 never lock clients out. Use lists 1-9 for clients.
//   - ACL entries are parsed by internal/acl: IPv4 masks must be
//     contiguous and host bits are masked off, so "acl 1 permit 10.0.0.5
//     255.0.0.0" covers 10.0.0.0/8 (Pen stores it unmasked and it never
//     matches).
//   - Malformed numbers are errors (Pen reads them as 0), and so are
//     missing arguments (Pen mostly does nothing, silently).
//   - clients_max and conn_max set the value (Pen can only grow the tables).
//   - From the control socket (Interp.Startup false) every verb whose
//     argument names a file or directory (include, log, web_stats, write,
//     ssl_ocsp_response, ssl_sni_path) or sets the listener or the DSR
//     interface (listen, dsr_if) is refused, by one gate before the verb
//     runs: Pen lets any control client redirect traffic, read files and
//     overwrite files. write alone still saves the -F file.
//   - A server address of "" (as in ":100") means 127.0.0.1, which is where
//     Pen's connect to 0.0.0.0 ends up on Linux.
//   - DSR (-O "dsr_if IF"): ParseArgs finds dsr_if among the -o/-O
//     commands before it builds the config, because nib applies flags and
//     positionals before the commands while Pen runs them during option
//     parsing. The listener is then VIP[:port] (no port or 0: every
//     port), server ports are ignored (stored as 0), -U is UDP DSR and -r
//     hashes each flow with the client port (Tracking off). An unspecified
//     server weight is 1: Pen's DSR counts 0 as 1, nib drains a server of
//     weight 0. -e, -B, -H and -E are refused with DSR. dsr_if in a -F
//     file alone is refused (give it with -O).
//   - tarpit_acl N is checked before lbd uses it: an empty list, one that
//     ends in deny, a permit of "any" or broader than /16, or one matching
//     a VIP or backend is refused (Pen would answer ARP for the whole LAN).
//   - Unix-socket listeners and servers, GeoIP ACLs, transparent mode,
//     -A (CA directory) and network logging (-l host:port) are not
//     supported and are refused with a clear message.
//
// VERBS.md in this directory lists every verb and what nib does with it.
package pen
