//go:build !linux

package arpd

import "github.com/mdlayher/packet"

func ignoreOutgoing(*packet.Conn) error { return nil }
