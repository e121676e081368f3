"""The live stats page served at ``{prefix}/ui``: one self-contained HTML file.

No external assets (no CDN, fonts or images), so it works offline and under a strict CSP-less
intranet setup. The page fetches the JSON endpoint once a second (the next fetch is scheduled
only after the previous one ends, so a slow server never piles requests up) and writes every
metric into an element with a stable id, ``m-<Stats field>`` (``m-queue_depth``,
``m-write_p99_ms`` ...). The element's text is the formatted value; its ``data-value``
attribute is the raw JSON value, for tests and scrapers. Fields the layout does not know yet
(a newer :class:`~litegate.Stats`) appear in an "other" table, with the same id scheme.

The stats URL is derived from the page's own location (``…/ui`` minus ``/ui``), so the page
also works when the app is mounted under a path; ``__STATS_URL__`` (the route prefix) is the
fallback.
"""

from __future__ import annotations

__all__ = ("PAGE",)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>litegate stats</title>
<style>
:root {
  --fg: #1d2433; --muted: #6b7385; --bg: #f5f6f8; --card: #fff; --line: #e3e6eb;
  --accent: #2f6fde; --accent-soft: rgba(47, 111, 222, .14); --bad: #c9342f; --ok: #1f9d55;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e6e8ee; --muted: #9aa1b2; --bg: #14171d; --card: #1c2028; --line: #2c313c;
    --accent: #6b9cff; --accent-soft: rgba(107, 156, 255, .18);
  }
}
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
  padding: 24px; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; margin-bottom: 18px; }
h1 { font-size: 20px; margin: 0; letter-spacing: .01em; }
h2 { font-size: 12px; margin: 0 0 10px; text-transform: uppercase; letter-spacing: .08em;
  color: var(--muted); font-weight: 600; }
#status { color: var(--muted); font-size: 13px; }
#status::before { content: ""; display: inline-block; width: 8px; height: 8px;
  border-radius: 50%; background: var(--muted); margin-right: 6px; vertical-align: 1px; }
#status.live::before { background: var(--ok); }
#status.stale { color: var(--bad); }
#status.stale::before { background: var(--bad); }
.grid { display: grid; gap: 16px; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; }
.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 0; border-bottom: 1px solid var(--line); text-align: left;
  font-weight: normal; }
tr:last-child th, tr:last-child td { border-bottom: 0; }
thead th { color: var(--muted); font-size: 12px; }
td, thead th.n { text-align: right; }
.v { font-variant-numeric: tabular-nums; font-weight: 600; }
.unit { color: var(--muted); font-weight: normal; font-size: 12px; }
.big { display: flex; gap: 24px; margin-bottom: 10px; }
.big div { min-width: 0; }
.big .v { display: block; font-size: 26px; line-height: 1.1; }
.big .label { color: var(--muted); font-size: 12px; }
.big .label .v { display: inline; font-size: 12px; line-height: inherit; }
.bar { height: 8px; border-radius: 4px; background: var(--accent-soft); overflow: hidden;
  margin: 4px 0 10px; }
.bar > i { display: block; height: 100%; width: 0; background: var(--accent);
  transition: width .3s; }
svg { display: block; width: 100%; height: 90px; }
#spark-area { fill: var(--accent-soft); }
#spark-line { fill: none; stroke: var(--accent); stroke-width: 2;
  vector-effect: non-scaling-stroke; stroke-linejoin: round; }
.spark-legend { display: flex; justify-content: space-between; color: var(--muted);
  font-size: 12px; margin-top: 6px; }
#other-card[hidden] { display: none; }
</style>
</head>
<body>
<header>
  <h1>litegate</h1>
  <span id="status">loading…</span>
</header>
<div class="grid">
  <section class="card">
    <h2>Write lane</h2>
    <div class="big">
      <div><span class="v" id="m-queue_depth">–</span><span class="label">queued of
        <span class="v" id="m-queue_capacity">–</span></span></div>
      <div><span class="v" id="m-jobs_ok">–</span><span class="label">jobs committed</span></div>
    </div>
    <div class="bar" title="queue depth / capacity"><i id="bar-queue"></i></div>
    <table><tbody>
      <tr><th>Batches (group commits)</th><td class="v" id="m-batches">–</td></tr>
      <tr><th>Batch size, mean (recent)</th><td class="v" id="m-mean_batch_size">–</td></tr>
      <tr><th>Batch size, max</th><td class="v" id="m-max_batch_size">–</td></tr>
      <tr><th>Jobs failed</th><td class="v" id="m-jobs_failed">–</td></tr>
      <tr><th>Transactions</th><td class="v" id="m-transactions">–</td></tr>
      <tr><th>Long lane holds</th><td class="v" id="m-long_holds">–</td></tr>
    </tbody></table>
  </section>
  <section class="card">
    <h2>Latency <span class="unit">ms, recent window</span></h2>
    <table>
      <thead><tr><th></th><th class="n">p50</th><th class="n">p99</th><th class="n">max</th></tr></thead>
      <tbody>
        <tr><th>Write</th><td class="v" id="m-write_p50_ms">–</td>
          <td class="v" id="m-write_p99_ms">–</td><td></td></tr>
        <tr><th>Read</th><td class="v" id="m-read_p50_ms">–</td>
          <td class="v" id="m-read_p99_ms">–</td><td></td></tr>
        <tr><th>Lane wait</th><td class="v" id="m-lane_wait_p50_ms">–</td>
          <td class="v" id="m-lane_wait_p99_ms">–</td><td></td></tr>
        <tr><th>Lane hold</th><td></td><td class="v" id="m-lane_hold_p99_ms">–</td>
          <td class="v" id="m-lane_hold_max_ms">–</td></tr>
        <tr><th>Reader wait</th><td></td><td class="v" id="m-pool_wait_p99_ms">–</td><td></td></tr>
        <tr><th>Busy wait</th><td></td><td></td><td class="v" id="m-busy_wait_max_ms">–</td></tr>
      </tbody>
    </table>
    <p class="spark-legend" style="margin-top:10px"><span>Reads served</span>
      <span class="v" id="m-reads">–</span></p>
  </section>
  <section class="card">
    <h2>Write p99 <span class="unit">ms, last <span id="spark-n">60</span> refreshes</span></h2>
    <svg id="spark" viewBox="0 0 300 90" preserveAspectRatio="none" role="img"
      aria-label="write p99 latency over recent refreshes" data-points="0">
      <polygon id="spark-area" points=""></polygon>
      <polyline id="spark-line" points=""></polyline>
    </svg>
    <div class="spark-legend"><span>now <span class="v" id="spark-now">–</span></span>
      <span>max <span class="v" id="spark-max">–</span></span></div>
  </section>
  <section class="card">
    <h2>Throughput <span class="unit">per second</span></h2>
    <div class="big">
      <div><span class="v" id="rate-jobs_ok">–</span><span class="label">writes/s</span></div>
      <div><span class="v" id="rate-batches">–</span><span class="label">commits/s</span></div>
      <div><span class="v" id="rate-reads">–</span><span class="label">reads/s</span></div>
    </div>
  </section>
  <section class="card">
    <h2>Readers <span class="unit" id="m-readers_mode"></span></h2>
    <div class="big">
      <div><span class="v" id="m-pool_in_use">–</span><span class="label">in use</span></div>
      <div><span class="v" id="m-pool_open">–</span><span class="label">open</span></div>
      <div><span class="v" id="m-pool_size">–</span><span class="label">size</span></div>
      <div><span class="v" id="m-pool_waiting">–</span><span class="label">waiting</span></div>
    </div>
    <div class="bar" title="in use / size"><i id="bar-pool"></i></div>
    <table><tbody>
      <tr><th>Waits for a reader</th><td class="v" id="m-pool_waits">–</td></tr>
      <tr><th>Reader timeouts</th><td class="v" id="m-pool_timeouts">–</td></tr>
    </tbody></table>
  </section>
  <section class="card">
    <h2>Other processes &amp; WAL</h2>
    <table><tbody>
      <tr><th>Busy retries</th><td class="v" id="m-busy_retries">–</td></tr>
      <tr><th>Busy timeouts</th><td class="v" id="m-busy_timeouts">–</td></tr>
      <tr><th>WAL size</th><td class="v" id="m-wal_bytes">–</td></tr>
      <tr><th>WAL warnings</th><td class="v" id="m-wal_warnings">–</td></tr>
      <tr><th>Checkpoints</th><td class="v" id="m-checkpoints">–</td></tr>
    </tbody></table>
  </section>
  <section class="card" id="other-card" hidden>
    <h2>Other</h2>
    <table><tbody id="other"></tbody></table>
  </section>
</div>
<script>
"use strict";
(function () {
  const fallback = "__STATS_URL__";
  const here = location.pathname.replace(/\\/ui\\/?$/, "");
  const url = here && here !== location.pathname ? here : fallback;
  const HISTORY = 60;
  const history = [];
  let refreshes = 0;
  let previous = null;

  function fmt(key, v) {
    if (typeof v !== "number") return String(v);
    if (key === "wal_bytes") {
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let x = v, i = 0;
      while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
      return i === 0 ? x + " B" : x.toFixed(1) + " " + units[i];
    }
    if (Number.isInteger(v) && !key.endsWith("_ms") && !key.startsWith("mean_")) return String(v);
    if (key.endsWith("_ms")) return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    return v.toFixed(2);
  }

  function cell(key) {
    let el = document.getElementById("m-" + key);
    if (el) return el;
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = key.replace(/_/g, " ");
    el = document.createElement("td");
    el.className = "v";
    el.id = "m-" + key;
    tr.append(th, el);
    document.getElementById("other").appendChild(tr);
    document.getElementById("other-card").hidden = false;
    return el;
  }

  function bar(id, part, whole) {
    const pct = whole > 0 ? Math.min(100, (100 * part) / whole) : 0;
    document.getElementById(id).style.width = pct.toFixed(1) + "%";
  }

  function spark(v) {
    history.push(typeof v === "number" && isFinite(v) ? v : 0);
    if (history.length > HISTORY) history.shift();
    const max = Math.max(...history) || 1;
    const n = history.length;
    const step = n > 1 ? 300 / (n - 1) : 0;
    const pts = history.map((y, i) => {
      const x = n > 1 ? i * step : 0;
      return x.toFixed(1) + "," + (86 - (y / max) * 80).toFixed(1);
    });
    if (n === 1) pts.push("300," + pts[0].split(",")[1]);
    document.getElementById("spark-line").setAttribute("points", pts.join(" "));
    const last = pts[pts.length - 1].split(",")[0];
    document.getElementById("spark-area").setAttribute(
      "points", "0,90 " + pts.join(" ") + " " + last + ",90");
    const svg = document.getElementById("spark");
    svg.setAttribute("data-points", String(n));
    document.getElementById("spark-now").textContent = fmt("write_p99_ms", history[n - 1]) + " ms";
    document.getElementById("spark-max").textContent = fmt("write_p99_ms", Math.max(...history)) + " ms";
  }

  function render(s) {
    for (const [key, v] of Object.entries(s)) {
      const el = cell(key);
      el.dataset.value = String(v);
      el.textContent = fmt(key, v);
      if (key === "wal_bytes") el.title = v + " bytes";
    }
    bar("bar-queue", s.queue_depth, s.queue_capacity);
    bar("bar-pool", s.pool_in_use, s.pool_size);
    spark(s.write_p99_ms);
    const now = performance.now();
    for (const key of ["jobs_ok", "batches", "reads"]) {
      const el = document.getElementById("rate-" + key);
      if (previous && now > previous.t && typeof s[key] === "number") {
        const rate = Math.max(0, s[key] - previous.s[key]) / ((now - previous.t) / 1000);
        el.textContent = rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
      }
    }
    previous = {t: now, s: s};
  }

  function status(text, cls) {
    const el = document.getElementById("status");
    el.textContent = text;
    el.className = cls;
    el.dataset.refreshes = String(refreshes);
  }

  async function refresh() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const r = await fetch(url, {
        headers: {accept: "application/json"}, cache: "no-store", signal: ctl.signal});
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      refreshes++;
      status("live · updated " + new Date().toLocaleTimeString(), "live");
    } catch (e) {
      status("stale · " + (e && e.name === "AbortError" ? "timed out" : String(e && e.message || e))
        + " · retrying", "stale");
    } finally {
      clearTimeout(timer);
    }
  }

  async function loop() {
    await refresh();
    setTimeout(loop, 1000);
  }
  document.getElementById("spark-n").textContent = String(HISTORY);
  loop();
})();
</script>
</body>
</html>
"""
