package pen

import (
	"fmt"
	"io"
	"strings"

	"github.com/nib-lb/nib/config"
)

// PrintTOML parses Pen's command line (without the program name) and
// prints the equivalent TOML config, for "lbd -print-toml <pen args>".
// Process flags without a TOML equivalent (-f, -p, -u, -j, -F) are listed
// in a leading comment.
func PrintTOML(args []string, w io.Writer) error {
	inv, err := ParseArgs(args)
	if err != nil {
		return err
	}
	b, err := config.Marshal(inv.Config)
	if err != nil {
		return err
	}
	var extra []string
	if inv.Foreground {
		extra = append(extra, "-f")
	}
	for _, f := range []struct{ flag, v string }{
		{"-p", inv.PidFile}, {"-u", inv.User}, {"-j", inv.Chroot}, {"-F", inv.ConfigFile},
	} {
		if f.v != "" {
			extra = append(extra, f.flag+" "+f.v)
		}
	}
	if len(extra) > 0 {
		fmt.Fprintf(w, "# Generated from a Pen command line; not in this file: %s\n", strings.Join(extra, " "))
		if inv.ConfigFile != "" {
			fmt.Fprintf(w, "# (the contents of %s are included below)\n", inv.ConfigFile)
		}
	}
	for _, n := range inv.Notices {
		fmt.Fprintf(w, "# note: %s\n", n)
	}
	_, err = w.Write(b)
	return err
}
