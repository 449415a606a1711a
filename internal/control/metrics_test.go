package control

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func fixedStatus() Status {
	dsr := &DSRStatus{
		Interface: "eth0", Received: 100, Forwarded: 90, PartialChecksums: 3, SuperFrames: 2,
		TarpitReplies: 4, ReadErrors: 1, Drops: map[string]uint64{"no-backend": 6, "acl": 4},
		ARP: ARPStatus{RequestsSeen: 50, RepliesVIP: 20, RepliesTarpit: 5, BackendLearned: 2, UnsolicitedIgnored: 7, Conflicts: 1},
	}
	return Status{Version: "v1.2.3", Reloads: map[string]uint64{"applied": 2, "rejected": 1, "failed": 0}, Services: []ServiceStatus{
		{Name: "web", Mode: "proxy", Active: 3, Accepted: 1000, Refused: 7, LocalErrors: 2, FlowLimited: 1,
			Backends: []BackendStatus{
				{Index: 0, Address: "10.0.0.1:80", State: "ok", Active: 2, Sent: 500, Received: 9000, Connects: 900, Failures: 3},
				{Index: 1, Address: "10.0.0.2:80", State: "blacklisted", Active: 1, Sent: 10, Received: 20, Connects: 100, Failures: 5,
					Health: &HealthStatus{Up: false, LatencyMs: 250, Checks: 40, Failures: 7, Transitions: 3}},
			}},
		// Two DSR services on one interface share its counters: one set.
		{Name: "dns", Mode: "dsr", DSR: dsr, Backends: []BackendStatus{
			{Index: 0, Address: "10.0.1.1:53", State: "ok", Sent: 4000, Packets: 40},
			{Index: 1, Address: "10.0.1.2:53", State: "down"},
		}},
		{Name: "ntp", Mode: "dsr", DSR: dsr, Backends: []BackendStatus{
			{Index: 0, Address: "10.0.1.1:123", State: "unresolved"},
		}},
	}}
}

const wantMetrics = `# HELP lbd_arp_backend_learned_total Backend addresses learned from ARP.
# TYPE lbd_arp_backend_learned_total counter
lbd_arp_backend_learned_total{interface="eth0"} 2
# HELP lbd_arp_conflicts_total ARP conflicts seen for lbd's addresses.
# TYPE lbd_arp_conflicts_total counter
lbd_arp_conflicts_total{interface="eth0"} 1
# HELP lbd_arp_replies_total ARP replies sent, by kind (vip, tarpit).
# TYPE lbd_arp_replies_total counter
lbd_arp_replies_total{interface="eth0",kind="tarpit"} 5
lbd_arp_replies_total{interface="eth0",kind="vip"} 20
# HELP lbd_arp_requests_seen_total ARP requests seen.
# TYPE lbd_arp_requests_seen_total counter
lbd_arp_requests_seen_total{interface="eth0"} 50
# HELP lbd_arp_unsolicited_ignored_total Unsolicited ARP replies ignored.
# TYPE lbd_arp_unsolicited_ignored_total counter
lbd_arp_unsolicited_ignored_total{interface="eth0"} 7
# HELP lbd_backend_bytes_received_total Bytes received from a backend (proxy services; DSR replies bypass lbd).
# TYPE lbd_backend_bytes_received_total counter
lbd_backend_bytes_received_total{backend="10.0.0.1:80",index="0",service="web"} 9000
lbd_backend_bytes_received_total{backend="10.0.0.2:80",index="1",service="web"} 20
# HELP lbd_backend_bytes_sent_total Bytes sent to a backend (DSR: bytes forwarded).
# TYPE lbd_backend_bytes_sent_total counter
lbd_backend_bytes_sent_total{backend="10.0.0.1:80",index="0",service="web"} 500
lbd_backend_bytes_sent_total{backend="10.0.0.2:80",index="1",service="web"} 10
lbd_backend_bytes_sent_total{backend="10.0.1.1:123",index="0",service="ntp"} 0
lbd_backend_bytes_sent_total{backend="10.0.1.1:53",index="0",service="dns"} 4000
lbd_backend_bytes_sent_total{backend="10.0.1.2:53",index="1",service="dns"} 0
# HELP lbd_backend_connect_failures_total Failed or timed-out connects to a backend (proxy services).
# TYPE lbd_backend_connect_failures_total counter
lbd_backend_connect_failures_total{backend="10.0.0.1:80",index="0",service="web"} 3
lbd_backend_connect_failures_total{backend="10.0.0.2:80",index="1",service="web"} 5
# HELP lbd_backend_connections_active Current connections to a backend (proxy services).
# TYPE lbd_backend_connections_active gauge
lbd_backend_connections_active{backend="10.0.0.1:80",index="0",service="web"} 2
lbd_backend_connections_active{backend="10.0.0.2:80",index="1",service="web"} 1
# HELP lbd_backend_connections_total Successful connects to a backend (proxy services).
# TYPE lbd_backend_connections_total counter
lbd_backend_connections_total{backend="10.0.0.1:80",index="0",service="web"} 900
lbd_backend_connections_total{backend="10.0.0.2:80",index="1",service="web"} 100
# HELP lbd_backend_health_check_failures_total Failed health checks of the backend.
# TYPE lbd_backend_health_check_failures_total counter
lbd_backend_health_check_failures_total{backend="10.0.0.2:80",index="1",service="web"} 7
# HELP lbd_backend_health_check_latency_seconds Duration of the backend's last health check.
# TYPE lbd_backend_health_check_latency_seconds gauge
lbd_backend_health_check_latency_seconds{backend="10.0.0.2:80",index="1",service="web"} 0.25
# HELP lbd_backend_health_checks_total Health checks of the backend.
# TYPE lbd_backend_health_checks_total counter
lbd_backend_health_checks_total{backend="10.0.0.2:80",index="1",service="web"} 40
# HELP lbd_backend_health_transitions_total Up/down transitions of the backend's health.
# TYPE lbd_backend_health_transitions_total counter
lbd_backend_health_transitions_total{backend="10.0.0.2:80",index="1",service="web"} 3
# HELP lbd_backend_health_up 1 while the backend passes its service's active health check, else 0 (only backends of services with a check).
# TYPE lbd_backend_health_up gauge
lbd_backend_health_up{backend="10.0.0.2:80",index="1",service="web"} 0
# HELP lbd_backend_packets_total Frames forwarded to a backend (DSR services).
# TYPE lbd_backend_packets_total counter
lbd_backend_packets_total{backend="10.0.1.1:123",index="0",service="ntp"} 0
lbd_backend_packets_total{backend="10.0.1.1:53",index="0",service="dns"} 40
lbd_backend_packets_total{backend="10.0.1.2:53",index="1",service="dns"} 0
# HELP lbd_backend_up 1 when the backend's state is ok, else 0 (blacklisted, drained, down, unresolved).
# TYPE lbd_backend_up gauge
lbd_backend_up{backend="10.0.0.1:80",index="0",service="web"} 1
lbd_backend_up{backend="10.0.0.2:80",index="1",service="web"} 0
lbd_backend_up{backend="10.0.1.1:123",index="0",service="ntp"} 0
lbd_backend_up{backend="10.0.1.1:53",index="0",service="dns"} 1
lbd_backend_up{backend="10.0.1.2:53",index="1",service="dns"} 0
# HELP lbd_build_info lbd's version; always 1.
# TYPE lbd_build_info gauge
lbd_build_info{version="v1.2.3"} 1
# HELP lbd_dsr_frames_dropped_total Frames dropped, by reason.
# TYPE lbd_dsr_frames_dropped_total counter
lbd_dsr_frames_dropped_total{interface="eth0",reason="acl"} 4
lbd_dsr_frames_dropped_total{interface="eth0",reason="no-backend"} 6
# HELP lbd_dsr_frames_forwarded_total Frames forwarded to a backend.
# TYPE lbd_dsr_frames_forwarded_total counter
lbd_dsr_frames_forwarded_total{interface="eth0"} 90
# HELP lbd_dsr_frames_received_total Frames the DSR machinery received on an interface.
# TYPE lbd_dsr_frames_received_total counter
lbd_dsr_frames_received_total{interface="eth0"} 100
# HELP lbd_dsr_partial_checksums_total Frames received with a partial checksum.
# TYPE lbd_dsr_partial_checksums_total counter
lbd_dsr_partial_checksums_total{interface="eth0"} 3
# HELP lbd_dsr_read_errors_total Read errors of the DSR socket.
# TYPE lbd_dsr_read_errors_total counter
lbd_dsr_read_errors_total{interface="eth0"} 1
# HELP lbd_dsr_super_frames_total Super-frames (GRO/GSO) received.
# TYPE lbd_dsr_super_frames_total counter
lbd_dsr_super_frames_total{interface="eth0"} 2
# HELP lbd_reloads_total Re-reads of the config file (SIGHUP, the API's reload) by outcome: applied, rejected (invalid file), failed (could not be applied).
# TYPE lbd_reloads_total counter
lbd_reloads_total{outcome="applied"} 2
lbd_reloads_total{outcome="failed"} 0
lbd_reloads_total{outcome="rejected"} 1
# HELP lbd_service_connections_active Current connections of a proxy service.
# TYPE lbd_service_connections_active gauge
lbd_service_connections_active{service="web"} 3
# HELP lbd_service_connections_total Connections accepted by a proxy service.
# TYPE lbd_service_connections_total counter
lbd_service_connections_total{service="web"} 1000
# HELP lbd_service_flow_limited_total UDP datagrams of a proxy service over the flow limits.
# TYPE lbd_service_flow_limited_total counter
lbd_service_flow_limited_total{service="web"} 1
# HELP lbd_service_local_errors_total Connections a proxy service lost to this host running out of descriptors or buffers.
# TYPE lbd_service_local_errors_total counter
lbd_service_local_errors_total{service="web"} 2
# HELP lbd_service_refused_total Connections refused by a proxy service.
# TYPE lbd_service_refused_total counter
lbd_service_refused_total{service="web"} 7
# HELP lbd_tarpit_replies_total Tarpit replies sent.
# TYPE lbd_tarpit_replies_total counter
lbd_tarpit_replies_total{interface="eth0"} 4
`

func TestCollector(t *testing.T) {
	c := NewCollector(fixedStatus)
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantMetrics)); err != nil {
		t.Error(err)
	}
	// The collector is consistent with its descriptions (a checked
	// registry refuses anything else).
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Error(err)
	}
	// An empty status (lbd before its first config) has the build info.
	if err := testutil.CollectAndCompare(NewCollector(func() Status { return Status{Version: "x"} }), strings.NewReader(`# HELP lbd_build_info lbd's version; always 1.
# TYPE lbd_build_info gauge
lbd_build_info{version="x"} 1
`)); err != nil {
		t.Error(err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	fb := &fakeBackend{}
	s, base := start(t, Options{Backend: fb})
	c := client(s.o.Secrets.Fingerprint, "")
	code, _, h := do(t, c, http.MethodGet, base+"/metrics", "", nil)
	if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %v", code, h)
	}
	code, body, h := do(t, c, http.MethodGet, base+"/metrics", s.o.Secrets.Token, nil)
	if code != http.StatusOK {
		t.Fatalf("metrics: %d %s", code, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, want := range []string{
		`lbd_build_info{version="test"} 1`,
		`lbd_backend_up{backend="127.0.0.1:80",index="0",service="web"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	code, _, h = do(t, c, http.MethodPost, base+"/metrics", s.o.Secrets.Token, nil)
	if code != http.StatusMethodNotAllowed || h.Get("Allow") != http.MethodGet {
		t.Errorf("POST /metrics: %d %v", code, h)
	}
}
