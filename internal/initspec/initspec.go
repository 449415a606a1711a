// Package initspec is the contract between nib's image builder and nib's
// gokrazy init: the list of programs to supervise, with their flags and
// environment, compiled into the init binary as one string.
package initspec

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// Service is one supervised program.
type Service struct {
	Path         string   // absolute path in the root file system
	Args         []string `json:",omitempty"`
	Env          []string `json:",omitempty"` // KEY=VALUE, added to the environment
	DontStart    bool     `json:",omitempty"`
	WaitForClock bool     `json:",omitempty"`
}

// Encode returns services in the form the builder passes to the linker
// (-X main.services=...): base64 of JSON, so no quoting problems.
func Encode(services []Service) (string, error) {
	b, err := json.Marshal(services)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Decode is Encode's inverse.
func Decode(s string) ([]Service, error) {
	if s == "" {
		return nil, errors.New("initspec: no services compiled in (build init with nib's image builder)")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var out []Service
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	for _, s := range out {
		if len(s.Path) == 0 || s.Path[0] != '/' {
			return nil, errors.New("initspec: service path must be absolute: " + s.Path)
		}
	}
	return out, nil
}
