package lbd

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// chunkReader gives data in reads whose sizes come from sizes (cycled; a 0
// is one read of nothing, as a reader may return, and the read after it
// gives at least a byte), then err: alone, or with the last bytes when
// withLast is set. It counts the bytes it handed out.
//
// After maxSplits reads the rest comes at once: readPenCommand scans all it
// has read after every read, so a 4 KiB line in 1-byte reads costs
// milliseconds, and the fuzzer's minimization of such inputs stalled it.
type chunkReader struct {
	data     []byte
	sizes    []byte
	err      error
	withLast bool
	reads    int
	given    int
	zero     bool // the last read returned nothing
}

const maxSplits = 64

func (r *chunkReader) Read(p []byte) (int, error) {
	r.reads++
	if len(r.data) == 0 {
		return 0, r.err
	}
	size := 1
	switch {
	case r.reads > maxSplits:
		size = len(r.data)
	case len(r.sizes) > 0:
		size = int(r.sizes[(r.reads-1)%len(r.sizes)])
	}
	if size == 0 && !r.zero {
		r.zero = true
		return 0, nil
	}
	r.zero = false
	n := min(max(size, 1), len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	r.given += n
	if len(r.data) == 0 && r.withLast {
		return n, r.err
	}
	return n, nil
}

// FuzzReadPenCommand: whatever a control client sends, however the reads
// split it and whatever error ends it, readPenCommand
//   - never panics and never takes more than maxPenCommand bytes from the
//     connection;
//   - returns at most maxPenCommand bytes, with no CR or LF in them, that
//     are the start of what was sent;
//   - returns exactly: what comes before the first CR or LF within the first
//     maxPenCommand bytes; else the first maxPenCommand bytes when that many
//     came; else, at EOF, everything sent (an unterminated last line); and
//     otherwise (nothing before EOF, or any other error) the error and no
//     command.
func FuzzReadPenCommand(f *testing.F) {
	long := strings.Repeat("x", maxPenCommand)
	// end: bit 0 set, a timeout rather than EOF ends the stream; bit 1 set,
	// the error comes with the last bytes rather than in a read of its own.
	for _, s := range []struct {
		data  string
		sizes []byte
		end   uint8
	}{
		{"status\n", nil, 0},
		{"status\r\n", []byte{3}, 0},
		{"server 0 address 127.0.0.1\nextra", []byte{0, 5, 100}, 0},
		{"recent", []byte{255}, 2},          // no newline: the last line at EOF
		{"recent", []byte{2}, 1},            // no newline, then a timeout
		{"", nil, 0},                        // EOF at once
		{"", nil, 1},                        // a timeout at once
		{"\n", nil, 0},                      // an empty command
		{long + "\n", []byte{200}, 0},       // the newline just past the limit
		{long[1:] + "\nmode", []byte{0}, 0}, // the newline is the last byte read
		{long + "y", []byte{255, 0, 17}, 3}, // more than the limit, then a timeout
		{long, []byte{255, 0, 17}, 3},       // the limit exactly, a timeout with its last bytes
		{"a\x00b\n", nil, 0},
	} {
		f.Add([]byte(s.data), s.sizes, s.end)
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte, endKind uint8) {
		var end error = io.EOF
		if endKind&1 != 0 {
			end = os.ErrDeadlineExceeded
		}
		r := &chunkReader{data: data, sizes: sizes, err: end, withLast: endKind&2 != 0}
		got, err := readPenCommand(r)

		if r.given > maxPenCommand {
			t.Fatalf("took %d bytes from the connection, more than %d", r.given, maxPenCommand)
		}
		if len(got) > maxPenCommand {
			t.Fatalf("command of %d bytes, more than %d", len(got), maxPenCommand)
		}
		if strings.ContainsAny(got, "\r\n") {
			t.Fatalf("command %q holds a line end", got)
		}
		if !bytes.HasPrefix(data, []byte(got)) {
			t.Fatalf("command %q is not the start of what was sent (%q)", got, data)
		}

		head := data[:min(len(data), maxPenCommand)]
		var want string
		var wantErr error
		switch i := bytes.IndexAny(head, "\r\n"); {
		case i >= 0:
			want = string(head[:i])
		case len(data) >= maxPenCommand:
			want = string(head)
		case len(data) > 0 && end == io.EOF:
			want = string(data)
		default:
			wantErr = end
		}
		if got != want || !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
			t.Fatalf("readPenCommand(%q in reads of %v, then %v) = %q, %v; want %q, %v", data, sizes, end, got, err, want, wantErr)
		}
	})
}
