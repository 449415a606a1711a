package penctl

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nib-lb/nib/internal/control"
)

// Status is GET /api/v1/status's reply: internal/control's type, so the
// client reads what the server writes.
type Status = control.Status

// writeStatus prints st as a table: one block per service, one line per
// backend.
func writeStatus(w io.Writer, st *Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if st.Version != "" {
		fmt.Fprintf(tw, "lbd %s\n", st.Version)
	}
	if len(st.Services) == 0 {
		fmt.Fprintln(tw, "no services")
	}
	for i, s := range st.Services {
		if i > 0 || st.Version != "" {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "service %s  listen %s  %s  %s  active %d  accepted %d  refused %d\n",
			s.Name, s.Listen, s.Protocol, s.Mode, s.Active, s.Accepted, s.Refused)
		if len(s.Backends) == 0 {
			fmt.Fprintln(tw, "  (no backends)")
			continue
		}
		if s.Mode == "dsr" {
			fmt.Fprintln(tw, "  #\tBACKEND\tWEIGHT\tSTATE\tPACKETS\tBYTES")
			for _, b := range s.Backends {
				fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%d\t%d\n", b.Index, b.Address, b.Weight, b.State, b.Packets, b.Sent)
			}
			continue
		}
		fmt.Fprintln(tw, "  #\tBACKEND\tWEIGHT\tSTATE\tACTIVE\tCONNECTS\tFAILED\tSENT\tRECEIVED")
		for _, b := range s.Backends {
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\n", b.Index, b.Address, b.Weight, b.State, b.Active, b.Connects, b.Failures, b.Sent, b.Received)
		}
	}
	return tw.Flush()
}
