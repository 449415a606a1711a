package config

import (
	_ "embed"
	"sync"
)

// defaultTOML is the embedded default configuration.
//
//go:embed default.toml
var defaultTOML []byte

var defaultConfig = sync.OnceValue(func() *Config {
	c, err := Parse("default.toml", defaultTOML)
	if err != nil {
		panic("config: embedded default.toml is invalid: " + err.Error())
	}
	return c
})

// Default returns the embedded default configuration, what lbd serves when
// it has no file (and `make run`): service "web" on 127.0.0.1:8080,
// round-robin without client tracking, over two built-in dummy backends on
// 127.0.0.1:8081 and 127.0.0.1:8082. Each call returns a new copy.
func Default() *Config {
	return defaultConfig().Clone()
}

// DefaultTOML returns the text of the embedded default configuration, for
// writing a first config file that keeps its comments.
func DefaultTOML() []byte {
	return append([]byte(nil), defaultTOML...)
}

// applianceTOML is the appliance's first configuration (/perm/lbd/config.toml).
//
//go:embed appliance.toml
var applianceTOML []byte

// ApplianceTOML returns the text of the appliance's first configuration: a
// welcome page on port 80 served by a built-in dummy backend.
func ApplianceTOML() []byte {
	return append([]byte(nil), applianceTOML...)
}
