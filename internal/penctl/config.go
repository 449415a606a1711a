package penctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nib-lb/nib/internal/atomicfile"
)

// File is the per-appliance config file (-config FILE or NIB_PENCTL_CONFIG),
// a small JSON object; every field is optional and unknown fields are
// refused (a typo should not silently drop a setting):
//
//	{
//	  "address": "lb1.example.net:9443",
//	  "token_file": "control.token",
//	  "fingerprint": "3f2a...64 hex digits"
//	}
//
// A relative token_file is relative to the config file's directory.
type File struct {
	Address     string `json:"address,omitempty"`
	TokenFile   string `json:"token_file,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// loadFile reads a config file; a missing file is an empty one when
// missingOK (so -trust -config can create it).
func loadFile(path string, missingOK bool) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			return &File{}, nil
		}
		return nil, usagef("penctl: config file: %v", err)
	}
	var f File
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, usagef("penctl: config file %s: %v", path, err)
	}
	if d.More() {
		return nil, usagef("penctl: config file %s: trailing data after the JSON object", path)
	}
	if f.TokenFile != "" && !filepath.IsAbs(f.TokenFile) {
		f.TokenFile = filepath.Join(filepath.Dir(path), f.TokenFile)
	}
	return &f, nil
}

// saveFingerprint sets the fingerprint and the address it belongs to (when
// the file names none or another) in the config file at path, keeping its other fields, atomically
// and with mode 0600.
func saveFingerprint(path, address, fingerprint string) error {
	var f File
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &f); err != nil {
			return usagef("penctl: config file %s: %v", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f.Fingerprint = fingerprint
	// The fingerprint belongs to the address it was taken from.
	if hp, err := hostPort(f.Address); err != nil || hp != address {
		f.Address = address
	}
	return WriteFile(path, f)
}

// WriteFile writes a config file atomically with mode 0600 (for the image
// builder, which knows the appliance's address, token file and
// certificate). A relative TokenFile is relative to the file's directory.
func WriteFile(path string, f File) error {
	b, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// readToken reads a token file: its content without surrounding white space.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("penctl: token file: %v", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", usagef("penctl: token file %s is empty", path)
	}
	return t, nil
}
