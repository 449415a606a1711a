package config

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one configuration error. Validate sets Key and Msg; Parse and
// Load also set File, Line and Col (1-based) to where Key is in the file.
// Several errors are returned joined with errors.Join; use errors.As to
// reach the first, or unwrap the join to list them all.
type Error struct {
	// File is the configuration file's name, "" for a programmatic Config.
	File string
	// Line and Col locate the key's value (or the key or table header
	// when the error concerns the key itself); 0 when unknown.
	Line, Col int
	// Key is the key path, e.g. "service[0].backend[1].address".
	Key string
	// Msg says what is wrong, e.g. `"10.0.0.300:80" is not an ip:port`.
	Msg string
}

// Error formats e as "file:line:col: key: msg", leaving out the parts that
// are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errList collects errors for one key path at a time.
type errList []*Error

func (l *errList) add(key, format string, args ...any) {
	*l = append(*l, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil, the single error, or all of them joined.
func (l errList) err() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// splitErrors flattens err (possibly joined) into *Error values; anything
// else becomes an *Error with no key.
func splitErrors(err error) errList {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var l errList
		for _, e := range j.Unwrap() {
			l = append(l, splitErrors(e)...)
		}
		return l
	}
	var e *Error
	if errors.As(err, &e) {
		return errList{e}
	}
	return errList{{Msg: err.Error()}}
}

// pos is a 1-based line and column.
type pos struct{ line, col int }

// positions maps key paths in one document to where they are.
type positions struct {
	// at maps a key path (service[0].backend[1].address) to its value, or
	// to the header of a table or array-of-tables element.
	at map[string]pos
	// keys maps the position of a key token back to its path, to name the
	// key of go-toml's decode errors with array indices.
	keys map[pos]string
	// syntax is set when the document is not valid TOML.
	syntax bool
}

// scanPositions walks data with go-toml's unstable parser. It stops quietly
// at a syntax error (the decoder reports that one), keeping what it found.
func scanPositions(data []byte) *positions {
	ps := &positions{at: make(map[string]pos), keys: make(map[pos]string)}
	var p unstable.Parser
	p.Reset(data)
	// arrays counts the elements of each array of tables seen so far,
	// keyed by resolved path ("service", "service[0].backend").
	arrays := make(map[string]int)
	table := ""
	// Offsets of line starts, for positions in O(log n) rather than by
	// scanning from the start of the document (unstable.Parser.Shape).
	lines := []int{0}
	for i, c := range data {
		if c == '\n' {
			lines = append(lines, i+1)
		}
	}
	where := func(n *unstable.Node) pos {
		off := int(n.Raw.Offset)
		l, found := slices.BinarySearch(lines, off)
		if !found {
			l--
		}
		return pos{l + 1, off - lines[l] + 1}
	}
	// resolve turns a (dotted) key relative to base into a path, indexing
	// into the latest element of every array of tables it passes through,
	// and records where each part is. It returns the path and the position
	// of the last part.
	resolve := func(base string, it unstable.Iterator) (string, pos) {
		path := base
		var last pos
		for it.Next() {
			k := it.Node()
			if path != "" {
				if n, ok := arrays[path]; ok && n > 0 {
					path += "[" + strconv.Itoa(n-1) + "]"
				}
			}
			path = joinKey(path, string(k.Data))
			last = where(k)
			ps.keys[last] = path
		}
		return path, last
	}
	var value func(path string, n *unstable.Node, at pos)
	value = func(path string, n *unstable.Node, at pos) {
		switch n.Kind {
		case unstable.Array:
			ps.at[path] = at
			i := 0
			it := n.Children()
			for it.Next() {
				c := it.Node()
				if c.Kind == unstable.Comment {
					continue
				}
				elem := path + "[" + strconv.Itoa(i) + "]"
				var cat pos
				if c.Kind == unstable.Array {
					cat = at
				} else {
					cat = where(c)
				}
				value(elem, c, cat)
				i++
			}
		case unstable.InlineTable:
			ps.at[path] = where(n)
			it := n.Children()
			for it.Next() {
				kv := it.Node()
				if kv.Kind != unstable.KeyValue {
					continue
				}
				kpath, kat := resolve(path, kv.Key())
				v := kv.Value()
				vat := kat
				if v.Kind != unstable.Array {
					vat = where(v)
				}
				value(kpath, v, vat)
			}
		default:
			ps.at[path] = at
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			path, at := resolve("", e.Key())
			table = path
			ps.at[path] = at
		case unstable.ArrayTable:
			path, at := resolve("", e.Key())
			n := arrays[path]
			arrays[path] = n + 1
			table = path + "[" + strconv.Itoa(n) + "]"
			ps.at[table] = at
			if _, ok := ps.at[path]; !ok {
				ps.at[path] = at
			}
		case unstable.KeyValue:
			path, at := resolve(table, e.Key())
			v := e.Value()
			if v.Kind != unstable.Array {
				at = where(v)
			}
			value(path, v, at)
		}
	}
	ps.syntax = p.Error() != nil
	return ps
}

// lookup finds key, or failing that its nearest enclosing table or array
// element that is in the file.
func (ps *positions) lookup(key string) (pos, bool) {
	for key != "" {
		if at, ok := ps.at[key]; ok {
			return at, true
		}
		key = parentKey(key)
	}
	return pos{}, false
}

// parentKey drops the last part of a key path: a.b[1] -> a.b -> a -> "".
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i]
	}
	return ""
}

// joinKey appends one key part to a path.
func joinKey(path, part string) string {
	if path == "" {
		return part
	}
	return path + "." + part
}

// locate fills in File, Line and Col of every error from the document's
// positions. Errors whose key is not in the file point at its start.
func locate(file string, l errList, ps *positions) {
	for _, e := range l {
		e.File = file
		if e.Line > 0 {
			continue
		}
		at, ok := ps.lookup(e.Key)
		if !ok {
			at = pos{1, 1}
		}
		e.Line, e.Col = at.line, at.col
	}
}

// decodeErrors converts go-toml's errors into *Error values named with key
// paths of this document.
func decodeErrors(file string, err error, ps *positions) errList {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var l errList
		for i := range strict.Errors {
			l = append(l, decodeError(file, &strict.Errors[i], ps, "unknown key"))
		}
		return l
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return errList{decodeError(file, de, ps, "")}
	}
	return errList{{File: file, Msg: err.Error()}}
}

func decodeError(file string, de *toml.DecodeError, ps *positions, msg string) *Error {
	line, col := de.Position()
	key, ok := ps.keys[pos{line, col}]
	if !ok {
		// The error points at a value, not a key.
		for k, at := range ps.at {
			if at == (pos{line, col}) && (!ok || len(k) > len(key)) {
				key, ok = k, true
			}
		}
	}
	if !ok {
		key = strings.Join(de.Key(), ".")
	}
	if msg == "" {
		msg = decodeMessage(strings.TrimPrefix(de.Error(), "toml: "))
		if ps.syntax && key == "" {
			msg = "syntax error: " + msg
		}
	}
	return &Error{File: file, Line: line, Col: col, Key: key, Msg: msg}
}

// typeMismatch matches go-toml's messages for a value of the wrong type.
var typeMismatch = regexp.MustCompile(`^cannot decode TOML (.+?) into (?:struct field \S+ of type |a Go value of type )?(\S+)$`)

// decodeMessage rewrites go-toml's type mismatch messages, which name Go
// types, in the file's terms.
func decodeMessage(msg string) string {
	m := typeMismatch.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want := strings.TrimLeft(m[2], "*")
	switch {
	case want == "int":
		want = "an integer"
	case want == "string":
		want = "a string"
	case want == "bool":
		want = "true or false"
	case want == "[]string":
		want = "an array of strings"
	case strings.HasPrefix(want, "map["), strings.HasPrefix(want, "config.raw"):
		want = "a table"
	case strings.HasPrefix(want, "[]config.raw"):
		want = "an array of tables"
	default:
		return msg
	}
	return fmt.Sprintf("expected %s, not a TOML %s", want, m[1])
}

// sortErrors orders errors by where they are in the file.
func sortErrors(l errList) {
	slices.SortStableFunc(l, func(a, b *Error) int {
		if c := cmp.Compare(a.Line, b.Line); c != 0 {
			return c
		}
		return cmp.Compare(a.Col, b.Col)
	})
}
