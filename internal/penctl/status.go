package penctl

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Status is GET /api/v1/status's reply.
type Status struct {
	Version  string    `json:"version"`
	Services []Service `json:"services"`
}

// Service is one service of Status.
type Service struct {
	Name     string    `json:"name"`
	Listen   string    `json:"listen"`
	Protocol string    `json:"protocol"`
	Mode     string    `json:"mode"`
	Active   int64     `json:"active"`
	Accepted uint64    `json:"accepted"`
	Refused  uint64    `json:"refused"`
	Backends []Backend `json:"backends"`
}

// Backend is one backend of a Service.
type Backend struct {
	Index   int    `json:"index"`
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	State   string `json:"state"`
	Active  int64  `json:"active"`
	Total   uint64 `json:"total"`
	// Sent and Received are bytes to and from the backend, when the
	// server reports them.
	Sent     uint64 `json:"sent,omitempty"`
	Received uint64 `json:"received,omitempty"`
}

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
		fmt.Fprintln(tw, "  #\tBACKEND\tWEIGHT\tSTATE\tACTIVE\tTOTAL\tSENT\tRECEIVED")
		for _, b := range s.Backends {
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%d\t%d\t%d\t%d\n", b.Index, b.Address, b.Weight, b.State, b.Active, b.Total, b.Sent, b.Received)
		}
	}
	return tw.Flush()
}
