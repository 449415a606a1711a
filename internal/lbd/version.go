package lbd

import (
	"log/syslog"
	"runtime/debug"
)

// version is set by the appliance builder (-ldflags -X) to the source
// tree's git description; empty otherwise.
var version string

// Version returns the version set at build time, else the module version
// lbd was built from, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// syslogWriter is where a background lbd logs, like Pen without -f.
func syslogWriter() (*syslog.Writer, error) {
	return syslog.New(syslog.LOG_USER|syslog.LOG_INFO, "lbd")
}
