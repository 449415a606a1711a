package lbd

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDSRLinkChange(t *testing.T) {
	a := netip.MustParseAddr
	mac1 := [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x02}
	mac2 := [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x99}
	lb, lb2, lb3 := a("198.51.100.2"), a("198.51.100.3"), a("198.51.100.4")
	ll := a("169.254.7.7")
	cur := linkView{up: true, mac: mac1, ip: lb}
	obs := func(up bool, mac [6]byte, addrs ...netip.Addr) linkObs {
		return linkObs{exists: true, up: up, mac: mac, addrs: addrs}
	}
	cases := []struct {
		name string
		cur  linkView
		obs  linkObs
		next linkView
		act  linkActions // logs compared by count and keyword
		log  string      // a word the log must contain ("" no log)
	}{
		{"nothing changed", cur, obs(true, mac1, lb), cur, linkActions{}, ""},
		{"a second address added", cur, obs(true, mac1, lb2, lb), cur, linkActions{}, ""},
		{"new lease added before the old one goes", cur, obs(true, mac1, lb, lb2), cur, linkActions{}, ""},
		{"old address gone, new one there", cur, obs(true, mac1, lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2}, "takes over"},
		{"old address gone, first of two taken", cur, obs(true, mac1, lb3, lb2),
			linkView{up: true, mac: mac1, ip: lb3}, linkActions{ip: lb3}, "takes over"},
		{"link-local passed over", cur, obs(true, mac1, ll, lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2}, "takes over"},
		{"only link-local left", cur, obs(true, mac1, ll),
			linkView{up: true, mac: mac1, ip: ll}, linkActions{ip: ll}, "takes over"},
		{"link-local gives way to a lease", linkView{up: true, mac: mac1, ip: ll}, obs(true, mac1, ll, lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2}, "takes over"},
		{"IPv6 and unspecified ignored", cur, obs(true, mac1, a("2001:db8::1"), netip.IPv4Unspecified(), lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2}, "takes over"},
		{"no address left: keep the old one, say so", cur, obs(true, mac1),
			linkView{up: true, mac: mac1, ip: lb, noAddr: true}, linkActions{}, "no IPv4 address"},
		{"still no address: said once", linkView{up: true, mac: mac1, ip: lb, noAddr: true}, obs(true, mac1),
			linkView{up: true, mac: mac1, ip: lb, noAddr: true}, linkActions{}, ""},
		{"the old address comes back", linkView{up: true, mac: mac1, ip: lb, noAddr: true}, obs(true, mac1, lb),
			cur, linkActions{}, ""},
		{"a new one comes after none", linkView{up: true, mac: mac1, ip: lb, noAddr: true}, obs(true, mac1, lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2}, "takes over"},
		{"link down", cur, obs(false, mac1, lb),
			linkView{up: false, mac: mac1, ip: lb}, linkActions{}, "link down"},
		{"still down", linkView{mac: mac1, ip: lb}, obs(false, mac1, lb),
			linkView{mac: mac1, ip: lb}, linkActions{}, ""},
		{"link back up: announce", linkView{mac: mac1, ip: lb}, obs(true, mac1, lb),
			cur, linkActions{linkUp: true}, "link up"},
		{"back up with a new address", linkView{mac: mac1, ip: lb}, obs(true, mac1, lb2),
			linkView{up: true, mac: mac1, ip: lb2}, linkActions{ip: lb2, linkUp: true}, "link up"},
		{"new MAC", cur, obs(true, mac2, lb),
			linkView{up: true, mac: mac2, ip: lb}, linkActions{mac: mac2, setMAC: true}, "MAC"},
		{"new MAC while down: taken, no announcement yet", linkView{mac: mac1, ip: lb}, obs(false, mac2, lb),
			linkView{mac: mac2, ip: lb}, linkActions{mac: mac2, setMAC: true}, "MAC"},
		{"zero MAC ignored", cur, obs(true, [6]byte{}, lb), cur, linkActions{}, ""},
		{"multicast MAC ignored", cur, obs(true, [6]byte{0x01, 0, 0x5e, 0, 0, 1}, lb), cur, linkActions{}, ""},
		{"interface gone", cur, linkObs{},
			linkView{mac: mac1, ip: lb}, linkActions{}, "gone"},
		{"interface still gone: said once", linkView{mac: mac1, ip: lb}, linkObs{},
			linkView{mac: mac1, ip: lb}, linkActions{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next, act := linkChange(tc.cur, tc.obs)
			if next != tc.next {
				t.Errorf("view %+v, want %+v", next, tc.next)
			}
			logs := act.logs
			act.logs, tc.act.logs = nil, nil
			if act.ip != tc.act.ip || act.mac != tc.act.mac || act.setMAC != tc.act.setMAC || act.linkUp != tc.act.linkUp {
				t.Errorf("actions %+v, want %+v", act, tc.act)
			}
			switch {
			case tc.log == "" && len(logs) != 0:
				t.Errorf("logged %q", logs)
			case tc.log != "" && !strings.Contains(strings.Join(logs, "\n"), tc.log):
				t.Errorf("logged %q, want a line with %q", logs, tc.log)
			}
			// Applying the same reading again changes nothing.
			again, act2 := linkChange(next, tc.obs)
			if again != next || act2.ip.IsValid() || act2.setMAC || act2.linkUp || len(act2.logs) != 0 {
				t.Errorf("second reading: %+v %+v", again, act2)
			}
		})
	}
}
