// Package gokrazy is nib's appliance module: the gok instance (nib/), nib's
// init (init/) and the image builder (build/). It is a module of its own so
// that the gokrazy runtime and the kernel and firmware data modules stay out
// of lbd's go.mod; this file pins the data modules, which the builder reads
// from the module cache. Every program config.json lists is a tool of this
// module (go.mod's tool block), so its dependencies are pinned here too and
// a build never changes go.mod or go.sum.
package gokrazy

import (
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/kernel.arm64"
	_ "github.com/gokrazy/kernel.rpi"
	_ "github.com/gokrazy/rpi-eeprom"
)
