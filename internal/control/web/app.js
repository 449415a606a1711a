// lbd's status page. It polls /api/v1/status every 2 s and /api/v1/history
// every sampling interval, with the session cookie, and draws them: per
// service its counters, a table of its backends, the DSR, ARP and tarpit
// counters of DSR services, and small charts of the recent minutes.
//
// Stable hooks for tests and scripts: section.service[data-service=NAME],
// tr[data-backend=INDEX] rows, a class per counter (svc-*, be-*, dsr-*,
// arp-*) whose data-value is the exact number, and figure.chart elements
// (chart-rate, chart-throughput) whose data-points is how many points they
// draw and data-peak their highest value.
"use strict";

(() => {
  const STATUS_EVERY_MS = 2000;
  let historyEveryMs = 5000; // replaced by the server's interval
  let status = null;
  let history = null;
  let stopped = false; // after a 401: the session is gone
  const errors = new Map(); // poll name → message

  // --- DOM helpers -------------------------------------------------------

  // el builds an element: attrs are attributes ("text" sets its text),
  // children are nodes or strings.
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null) continue;
      if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs = {}) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    return e;
  }

  // --- formatting --------------------------------------------------------

  function fmtCount(n) {
    return Number(n || 0).toLocaleString("en-US");
  }

  function fmtBytes(n) {
    n = Number(n || 0);
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
  }

  function fmtRate(n, unit) {
    n = Number(n || 0);
    if (unit === "B/s") return fmtBytes(n) + "/s";
    return (n >= 100 ? n.toFixed(0) : n.toFixed(1)) + " " + unit;
  }

  // counter is one labelled number: cls names it, data-value holds it.
  function counter(label, cls, value, fmt = fmtCount) {
    return el("div", { class: "counter" },
      el("dt", { text: label }),
      el("dd", { class: cls, "data-value": value ?? 0, text: fmt(value) }));
  }

  // --- rendering ---------------------------------------------------------

  function render() {
    if (!status) return;
    document.getElementById("version").textContent = status.version || "?";
    const r = status.reloads || {};
    const reloads = document.getElementById("reloads");
    reloads.textContent = `${r.applied || 0} applied, ${r.rejected || 0} rejected, ${r.failed || 0} failed`;
    reloads.dataset.applied = r.applied || 0;
    reloads.dataset.rejected = r.rejected || 0;
    reloads.dataset.failed = r.failed || 0;
    const main = document.getElementById("services");
    const services = status.services || [];
    if (services.length === 0) {
      main.replaceChildren(el("p", { class: "empty", text: "No services." }));
      return;
    }
    main.replaceChildren(...services.map(renderService));
  }

  function renderService(s) {
    const dsr = s.mode === "dsr";
    const sec = el("section", { class: "service", "data-service": s.name, "data-mode": s.mode },
      el("h2", {},
        el("span", { class: "svc-name", text: s.name }),
        el("span", { class: "svc-listen", text: s.listen }),
        el("span", { class: "tag svc-protocol", text: s.protocol }),
        el("span", { class: "tag svc-mode", text: s.mode })));
    if (!dsr) {
      sec.append(el("dl", { class: "counters" },
        counter("active", "svc-active", s.active),
        counter("accepted", "svc-accepted", s.accepted),
        counter("refused", "svc-refused", s.refused),
        counter("local errors", "svc-local-errors", s.local_errors),
        counter("flow limited", "svc-flow-limited", s.flow_limited)));
    }
    sec.append(renderBackends(s.backends || [], dsr));
    if (s.dsr) sec.append(renderDSR(s.dsr));
    sec.append(renderCharts(s.name, dsr));
    return sec;
  }

  // healthCell shows a backend's active health check: up, or down with the
  // reason; "–" without checks.
  function healthCell(h) {
    if (!h) return el("td", { class: "be-health", "data-value": "", text: "–" });
    const word = h.up ? "up" : "down";
    const td = el("td", { class: "be-health health-" + word, "data-value": word,
      text: h.up ? "up" : "down: " + (h.reason || h.last_failure || "failing") });
    td.title = `since ${h.since}; last check ${h.latency_ms.toFixed(1)} ms; ${h.checks} checks, ${h.failures} failed, ${h.transitions} transitions` +
      (h.last_failure ? `; last failure: ${h.last_failure}` : "");
    return td;
  }

  function renderBackends(backends, dsr) {
    const cols = [["#", ""], ["address", ""], ["state", ""], ["health", ""], ["weight", "num"], ["active", "num"],
      ["connects", "num"], ["failed", "num"], ["sent", "num"], ["received", "num"], ["packets", "num"]];
    const rows = backends.map((b) => {
      const state = el("td", { class: "be-state state-" + b.state, "data-value": b.state, text: b.state });
      if (b.blacklisted_until) state.title = "until " + b.blacklisted_until;
      return el("tr", { "data-backend": b.index, "data-address": b.address, "data-state": b.state },
        el("td", { class: "be-index", "data-value": b.index, text: b.index }),
        el("td", { class: "be-address", text: b.address }),
        state,
        healthCell(b.health),
        el("td", { class: "be-weight num", "data-value": b.weight, text: b.weight }),
        el("td", { class: "be-active num", "data-value": b.active, text: dsr ? "–" : fmtCount(b.active) }),
        el("td", { class: "be-connects num", "data-value": b.connects || 0, text: dsr ? "–" : fmtCount(b.connects) }),
        el("td", { class: "be-failures num", "data-value": b.connect_failures || 0, text: dsr ? "–" : fmtCount(b.connect_failures) }),
        el("td", { class: "be-sent num", "data-value": b.sent, text: fmtBytes(b.sent) }),
        el("td", { class: "be-received num", "data-value": b.received, text: dsr ? "–" : fmtBytes(b.received) }),
        el("td", { class: "be-packets num", "data-value": b.packets || 0, text: dsr ? fmtCount(b.packets) : "–" }));
    });
    return el("table", { class: "backends" },
      el("thead", {}, el("tr", {}, ...cols.map(([c, cls]) => el("th", { class: cls || null, text: c })))),
      el("tbody", {}, ...rows));
  }

  function renderDSR(d) {
    const arp = d.arp || {};
    const drops = Object.entries(d.drops || {}).sort(([a], [b]) => a.localeCompare(b));
    return el("div", { class: "dsr", "data-interface": d.interface },
      el("h3", { text: "DSR on " + d.interface }),
      el("dl", { class: "counters" },
        counter("received", "dsr-received", d.received),
        counter("forwarded", "dsr-forwarded", d.forwarded),
        counter("partial checksums", "dsr-partial-checksums", d.partial_checksums),
        counter("super-frames", "dsr-super-frames", d.super_frames),
        counter("read errors", "dsr-read-errors", d.read_errors),
        counter("tarpit replies", "dsr-tarpit-replies", d.tarpit_replies),
        ...drops.map(([reason, n]) => counter("dropped: " + reason, "dsr-drop", n))),
      el("h3", { text: "ARP" }),
      el("dl", { class: "counters" },
        counter("requests seen", "arp-requests-seen", arp.requests_seen),
        counter("replies (VIP)", "arp-replies-vip", arp.replies_vip),
        counter("replies (tarpit)", "arp-replies-tarpit", arp.replies_tarpit),
        counter("backends learned", "arp-backend-learned", arp.backend_learned),
        counter("unsolicited ignored", "arp-unsolicited-ignored", arp.unsolicited_ignored),
        counter("conflicts", "arp-conflicts", arp.conflicts)));
  }

  // --- charts ------------------------------------------------------------

  // seriesOf returns the service's samples from the history: [time, sample].
  function seriesOf(name) {
    const out = [];
    for (const p of (history && history.points) || []) {
      const s = (p.services || []).find((x) => x.name === name);
      if (s) out.push([Date.parse(p.time), s]);
    }
    return out;
  }

  function renderCharts(name, dsr) {
    const pts = seriesOf(name);
    const first = dsr
      ? chart("chart-rate", "packets/s", pts, [["packets_per_second", "line-a", ""]], (v) => fmtRate(v, "pkt/s"))
      : chart("chart-rate", "connections/s", pts, [["accepted_per_second", "line-a", ""]], (v) => fmtRate(v, "/s"));
    const lines = dsr
      ? [["sent_bytes_per_second", "line-a", ""]]
      : [["sent_bytes_per_second", "line-a", "to backends"], ["received_bytes_per_second", "line-b", "from backends"]];
    const second = chart("chart-throughput", dsr ? "bytes forwarded/s" : "throughput", pts, lines, (v) => fmtRate(v, "B/s"));
    return el("div", { class: "charts" }, first, second);
  }

  // chart draws lines ([field, class, legend]) of pts as a small SVG line
  // chart.
  function chart(cls, title, pts, lines, fmt) {
    const W = 300, H = 80, PAD = 2;
    let peak = 0;
    for (const [, s] of pts) for (const [f] of lines) peak = Math.max(peak, Number(s[f] || 0));
    const fig = el("figure", { class: "chart " + cls, "data-points": pts.length, "data-peak": peak });
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    svg.append(svgEl("rect", { class: "frame", x: 0, y: 0, width: W, height: H }));
    if (pts.length >= 2) {
      const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
      const x = (t) => PAD + ((t - t0) / Math.max(t1 - t0, 1)) * (W - 2 * PAD);
      const y = (v) => H - PAD - (peak > 0 ? (v / peak) * (H - 2 * PAD) : 0);
      for (const [f, lc] of lines) {
        const xy = pts.map(([t, s]) => x(t).toFixed(1) + "," + y(Number(s[f] || 0)).toFixed(1));
        svg.append(svgEl("polyline", { class: "line " + lc, points: xy.join(" ") }));
      }
    } else {
      svg.append(svgEl("text", { class: "nodata", x: W / 2, y: H / 2, text: "collecting…" }));
    }
    const span = pts.length >= 2 ? Math.round((pts[pts.length - 1][0] - pts[0][0]) / 60000) : 0;
    fig.append(svg, el("figcaption", {},
      el("span", { class: "chart-title", text: title }),
      ...lines.filter(([, , label]) => label).map(([, lc, label]) => el("span", { class: "legend " + lc, text: label })),
      el("span", { class: "chart-peak", text: "peak " + fmt(peak) }),
      el("span", { class: "chart-span", text: span > 0 ? "last " + span + " min" : "" })));
    return fig;
  }

  // --- polling -----------------------------------------------------------

  async function getJSON(path) {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) {
      const e = new Error(path + ": HTTP " + r.status);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  function showErrors() {
    const box = document.getElementById("error");
    if (errors.size === 0) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const msgs = [...errors.values()];
    box.replaceChildren(...msgs.map((m) => (m instanceof Node ? m : el("p", { text: m }))));
    box.hidden = false;
  }

  function errorMessage(e) {
    if (e.status === 401) {
      return el("p", { class: "relogin" }, "Your session has ended (or lbd restarted). ", el("a", { href: "/", text: "Log in again" }), ".");
    }
    if (e.status === 429) return "Too many failed attempts from this address; retrying.";
    return "Update failed: " + e.message;
  }

  // poll fetches path now and every every() ms, handing the reply to apply.
  function poll(name, path, every, apply) {
    const run = async () => {
      if (stopped) return;
      try {
        apply(await getJSON(path));
        errors.delete(name);
      } catch (e) {
        errors.set(name, errorMessage(e));
        if (e.status === 401) stopped = true; // polling on would only count failures
      }
      showErrors();
      if (!stopped) setTimeout(run, every());
    };
    run();
  }

  function start() {
    poll("status", "/api/v1/status", () => STATUS_EVERY_MS, (st) => {
      status = st;
      const now = new Date();
      const u = document.getElementById("updated");
      u.textContent = now.toLocaleTimeString();
      u.dateTime = now.toISOString();
      render();
    });
    poll("history", "/api/v1/history", () => historyEveryMs, (h) => {
      history = h;
      if (h.interval_seconds > 0) historyEveryMs = Math.max(1000, h.interval_seconds * 1000);
      render();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
