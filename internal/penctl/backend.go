package penctl

import (
	"strconv"

	"github.com/nib-lb/nib/internal/control"
)

// backendDone says what each backend operation did, for its reply line.
var backendDone = map[string]string{
	"add": "added", "remove": "removed", "drain": "drained", "undrain": "undrained",
	"weight": "set the weight of", control.OpBlacklist: "blacklisted",
}

// backendRequest reads "backend OP SERVICE ADDR [N]" (without the verb)
// into the control API's request. It checks the shape; lbd checks the
// names and addresses.
func backendRequest(args []string) (control.BackendRequest, error) {
	const usage = "usage: penctl backend add SERVICE ADDR [WEIGHT] | remove|drain|undrain SERVICE ADDR | " +
		"weight SERVICE ADDR N | blacklist SERVICE ADDR SECONDS"
	if len(args) < 3 {
		return control.BackendRequest{}, usagef("penctl: backend needs an operation, a service and an address\n%s", usage)
	}
	req := control.BackendRequest{Op: args[0], Service: args[1], Backend: args[2]}
	rest := args[3:]
	number := func(what string, lo, hi int) (*int, error) {
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < lo || n > hi {
			return nil, usagef("penctl: backend %s: %s must be a number from %d to %d, not %q", req.Op, what, lo, hi, rest[0])
		}
		return &n, nil
	}
	var err error
	switch req.Op {
	case "add":
		if len(rest) > 1 {
			return req, usagef("penctl: backend add takes SERVICE ADDR [WEIGHT]\n%s", usage)
		}
		if len(rest) == 1 {
			req.Weight, err = number("WEIGHT", 1, 1000000)
		}
	case "remove", "drain", "undrain":
		if len(rest) != 0 {
			return req, usagef("penctl: backend %s takes SERVICE ADDR\n%s", req.Op, usage)
		}
	case "weight":
		if len(rest) != 1 {
			return req, usagef("penctl: backend weight takes SERVICE ADDR N\n%s", usage)
		}
		req.Weight, err = number("N", 0, 1000000)
	case control.OpBlacklist:
		if len(rest) != 1 {
			return req, usagef("penctl: backend blacklist takes SERVICE ADDR SECONDS\n%s", usage)
		}
		req.Seconds, err = number("SECONDS", 0, control.MaxBlacklistSeconds)
	default:
		return req, usagef("penctl: backend: unknown operation %q\n%s", req.Op, usage)
	}
	if err != nil {
		return req, err
	}
	if err := control.CheckBackendRequest(req); err != nil {
		return req, usagef("penctl: backend: %v\n%s", err, usage)
	}
	return req, nil
}
