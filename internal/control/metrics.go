package control

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics (GET /metrics). The collector builds them from a
// Status snapshot each time it is scraped, so serving them adds nothing to
// lbd's data path.

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	svcL = []string{"service"}
	beL  = []string{"service", "backend", "index"}
	ifL  = []string{"interface"}

	mBuildInfo = desc("lbd_build_info", "lbd's version; always 1.", "version")
	mReloads   = desc("lbd_reloads_total", "Re-reads of the config file (SIGHUP, the API's reload) by outcome: applied, rejected (invalid file), failed (could not be applied).", "outcome")

	mSvcActive      = desc("lbd_service_connections_active", "Current connections of a proxy service.", svcL...)
	mSvcTotal       = desc("lbd_service_connections_total", "Connections accepted by a proxy service.", svcL...)
	mSvcRefused     = desc("lbd_service_refused_total", "Connections refused by a proxy service.", svcL...)
	mSvcLocalErrors = desc("lbd_service_local_errors_total", "Connections a proxy service lost to this host running out of descriptors or buffers.", svcL...)
	mSvcFlowLimited = desc("lbd_service_flow_limited_total", "UDP datagrams of a proxy service over the flow limits.", svcL...)

	mBeActive   = desc("lbd_backend_connections_active", "Current connections to a backend (proxy services).", beL...)
	mBeTotal    = desc("lbd_backend_connections_total", "Successful connects to a backend (proxy services).", beL...)
	mBeFailures = desc("lbd_backend_connect_failures_total", "Failed or timed-out connects to a backend (proxy services).", beL...)
	mBeSent     = desc("lbd_backend_bytes_sent_total", "Bytes sent to a backend (DSR: bytes forwarded).", beL...)
	mBeReceived = desc("lbd_backend_bytes_received_total", "Bytes received from a backend (proxy services; DSR replies bypass lbd).", beL...)
	mBePackets  = desc("lbd_backend_packets_total", "Frames forwarded to a backend (DSR services).", beL...)
	mBeHealthUp = desc("lbd_backend_health_up", "1 while the backend passes its service's active health check, else 0 (only backends of services with a check).", beL...)
	mBeLatency  = desc("lbd_backend_health_check_latency_seconds", "Duration of the backend's last health check.", beL...)
	mBeChecks   = desc("lbd_backend_health_checks_total", "Health checks of the backend.", beL...)
	mBeCheckErr = desc("lbd_backend_health_check_failures_total", "Failed health checks of the backend.", beL...)
	mBeTrans    = desc("lbd_backend_health_transitions_total", "Up/down transitions of the backend's health.", beL...)
	mBeUp       = desc("lbd_backend_up", "1 when the backend's state is ok, else 0 (blacklisted, drained, down, unresolved).", beL...)

	mDSRReceived  = desc("lbd_dsr_frames_received_total", "Frames the DSR machinery received on an interface.", ifL...)
	mDSRForwarded = desc("lbd_dsr_frames_forwarded_total", "Frames forwarded to a backend.", ifL...)
	mDSRDropped   = desc("lbd_dsr_frames_dropped_total", "Frames dropped, by reason.", "interface", "reason")
	mDSRPartial   = desc("lbd_dsr_partial_checksums_total", "Frames received with a partial checksum.", ifL...)
	mDSRSuper     = desc("lbd_dsr_super_frames_total", "Super-frames (GRO/GSO) received.", ifL...)
	mDSRReadErrs  = desc("lbd_dsr_read_errors_total", "Read errors of the DSR socket.", ifL...)
	mTarpit       = desc("lbd_tarpit_replies_total", "Tarpit replies sent.", ifL...)

	mARPRequests    = desc("lbd_arp_requests_seen_total", "ARP requests seen.", ifL...)
	mARPReplies     = desc("lbd_arp_replies_total", "ARP replies sent, by kind (vip, tarpit).", "interface", "kind")
	mARPLearned     = desc("lbd_arp_backend_learned_total", "Backend addresses learned from ARP.", ifL...)
	mARPUnsolicited = desc("lbd_arp_unsolicited_ignored_total", "Unsolicited ARP replies ignored.", ifL...)
	mARPConflicts   = desc("lbd_arp_conflicts_total", "ARP conflicts seen for lbd's addresses.", ifL...)

	allDescs = []*prometheus.Desc{
		mBuildInfo, mSvcActive, mSvcTotal, mSvcRefused, mSvcLocalErrors, mSvcFlowLimited,
		mReloads, mBeHealthUp, mBeLatency, mBeChecks, mBeCheckErr, mBeTrans, mBeActive, mBeTotal, mBeFailures, mBeSent, mBeReceived, mBePackets, mBeUp,
		mDSRReceived, mDSRForwarded, mDSRDropped, mDSRPartial, mDSRSuper, mDSRReadErrs, mTarpit,
		mARPRequests, mARPReplies, mARPLearned, mARPUnsolicited, mARPConflicts,
	}
)

// Collector is a prometheus.Collector of lbd's status: each scrape takes
// one snapshot from its function.
type Collector struct {
	status func() Status
}

// NewCollector returns a collector that reads status when scraped.
func NewCollector(status func() Status) *Collector { return &Collector{status: status} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(mBuildInfo, 1, st.Version)
	for outcome, n := range st.Reloads {
		counter(mReloads, n, outcome)
	}
	// DSR counters belong to an interface, which services may share.
	ifaces := map[string]bool{}
	for _, s := range st.Services {
		dsr := s.Mode == "dsr"
		if !dsr {
			gauge(mSvcActive, float64(s.Active), s.Name)
			counter(mSvcTotal, s.Accepted, s.Name)
			counter(mSvcRefused, s.Refused, s.Name)
			counter(mSvcLocalErrors, s.LocalErrors, s.Name)
			counter(mSvcFlowLimited, s.FlowLimited, s.Name)
		}
		for _, b := range s.Backends {
			l := []string{s.Name, b.Address, strconv.Itoa(b.Index)}
			counter(mBeSent, b.Sent, l...)
			if dsr {
				counter(mBePackets, b.Packets, l...)
			} else {
				gauge(mBeActive, float64(b.Active), l...)
				counter(mBeTotal, b.Connects, l...)
				counter(mBeFailures, b.Failures, l...)
				counter(mBeReceived, b.Received, l...)
			}
			up := 0.0
			if b.State == "ok" {
				up = 1
			}
			gauge(mBeUp, up, l...)
			if h := b.Health; h != nil {
				hu := 0.0
				if h.Up {
					hu = 1
				}
				gauge(mBeHealthUp, hu, l...)
				gauge(mBeLatency, h.LatencyMs/1000, l...)
				counter(mBeChecks, h.Checks, l...)
				counter(mBeCheckErr, h.Failures, l...)
				counter(mBeTrans, h.Transitions, l...)
			}
		}
		if d := s.DSR; d != nil && !ifaces[d.Interface] {
			ifaces[d.Interface] = true
			i := d.Interface
			counter(mDSRReceived, d.Received, i)
			counter(mDSRForwarded, d.Forwarded, i)
			for reason, n := range d.Drops {
				counter(mDSRDropped, n, i, reason)
			}
			counter(mDSRPartial, d.PartialChecksums, i)
			counter(mDSRSuper, d.SuperFrames, i)
			counter(mDSRReadErrs, d.ReadErrors, i)
			counter(mTarpit, d.TarpitReplies, i)
			counter(mARPRequests, d.ARP.RequestsSeen, i)
			counter(mARPReplies, d.ARP.RepliesVIP, i, "vip")
			counter(mARPReplies, d.ARP.RepliesTarpit, i, "tarpit")
			counter(mARPLearned, d.ARP.BackendLearned, i)
			counter(mARPUnsolicited, d.ARP.UnsolicitedIgnored, i)
			counter(mARPConflicts, d.ARP.Conflicts, i)
		}
	}
}
