// Package config parses, validates and saves lbd's TOML configuration.
package config
