"""The live stats page served at ``/_litegate/ui`` (no external assets: one HTML file)."""

from __future__ import annotations

__all__ = ("PAGE",)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>litegate stats</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; text-align: left; }
td.v { text-align: right; font-variant-numeric: tabular-nums; }
#status { color: #777; }
</style>
</head>
<body>
<h1>litegate</h1>
<p id="status">loading…</p>
<table id="stats"><tbody></tbody></table>
<script>
const url = "__STATS_URL__";
async function refresh() {
  try {
    const r = await fetch(url, {headers: {"accept": "application/json"}, cache: "no-store"});
    const s = await r.json();
    const body = document.querySelector("#stats tbody");
    for (const [k, v] of Object.entries(s)) {
      let cell = document.getElementById("v-" + k);
      if (!cell) {
        const tr = document.createElement("tr");
        tr.innerHTML = "<th>" + k + "</th><td class='v' id='v-" + k + "'></td>";
        body.appendChild(tr);
        cell = document.getElementById("v-" + k);
      }
      cell.textContent = String(v);
    }
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""
