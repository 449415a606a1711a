package lbd

import (
	"log/syslog"
	"runtime/debug"
)

// Version returns the module version lbd was built from, or "devel".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// syslogWriter is where a background lbd logs, like Pen without -f.
func syslogWriter() (*syslog.Writer, error) {
	return syslog.New(syslog.LOG_USER|syslog.LOG_INFO, "lbd")
}
