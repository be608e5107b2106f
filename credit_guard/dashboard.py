"""The admin dashboard: one self-contained page (``PAGE``), served at
``GET /admin/`` by ``admin.AdminAPI``.

Everything is inline: the styles, the script, and the charts, which the
script draws as SVG.  Nothing is loaded from anywhere but this gateway's own
admin API, which the page calls with the token typed into it or given in the
URL fragment (``/admin/#token=...``; browsers never send a fragment, and the
page removes it from the address bar).  The page itself needs no token and
holds no data.

Amounts stay exact in the page too: the script reads each amount's decimal
text from the JSON (never a float), sums in integer units of 1e-10 with
``BigInt``, and puts the exact figure on each table cell and chart bar as
``data-*`` attributes; only bar heights are approximate.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>credit_guard admin</title>
<style>
  :root { --ink: #1d2330; --dim: #667085; --line: #e4e7ec; --bg: #f8f9fb; --card: #fff; --accent: #2f6fed; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--ink); background: var(--bg); }
  header { display: flex; gap: 16px; align-items: center; padding: 12px 24px;
           background: var(--card); border-bottom: 1px solid var(--line); }
  h1 { font-size: 17px; margin: 0 12px 0 0; }
  h2 { font-size: 14px; margin: 0 0 10px; color: var(--dim); text-transform: uppercase; letter-spacing: .04em; }
  form { display: flex; gap: 8px; }
  input { font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; width: 280px; }
  button { font: inherit; padding: 5px 12px; border: 0; border-radius: 6px;
           background: var(--accent); color: #fff; cursor: pointer; }
  #status { color: var(--dim); }
  #status.error { color: #b42318; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; padding: 16px 24px; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
            padding: 14px 16px; overflow-x: auto; }
  section.wide { grid-column: 1 / -1; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--dim); font-weight: 600; font-size: 12px; }
  td.num, th.num { text-align: right; }
  .empty { color: var(--dim); font-style: italic; }
  .legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 8px; font-size: 12px; }
  .legend span::before { content: ""; display: inline-block; width: 10px; height: 10px; margin-right: 5px;
                         border-radius: 2px; background: var(--c); }
  svg text { font-size: 10px; fill: var(--dim); }
</style>
</head>
<body data-state="idle">
<header>
  <h1>credit_guard</h1>
  <form id="login" autocomplete="off">
    <input id="token" type="password" placeholder="admin token" aria-label="admin token">
    <button type="submit">Show</button>
  </form>
  <span id="status">Enter the admin token.</span>
</header>
<main>
  <section class="wide"><h2>Accounts</h2>
    <table id="accounts"><thead><tr><th>account</th><th class="num">available</th><th class="num">held</th>
      <th class="num">spent</th><th class="num">granted</th><th class="num">402s</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section><h2>Spend per day by model (30 days)</h2><div id="chart-model" class="chart"></div></section>
  <section><h2>Spend per day by key (30 days)</h2><div id="chart-key" class="chart"></div></section>
  <section class="wide"><h2>Recent requests</h2>
    <table id="requests"><thead><tr><th>ended (UTC)</th><th>request</th><th>account</th><th>key</th><th>model</th>
      <th>outcome</th><th class="num">in</th><th class="num">out</th><th class="num">held</th>
      <th class="num">charged</th>
      </tr></thead><tbody></tbody></table>
  </section>
  <section class="wide"><h2>Refused for credits (402)</h2>
    <table id="rejections"><thead><tr><th>at (UTC)</th><th>request</th><th>account</th><th>key</th><th>model</th>
      <th>reason</th><th class="num">required</th><th class="num">available</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
// Amount fields arrive as JSON numbers with exact decimal text: keep that text.
const AMOUNT = /"(available|held|spent|granted|charged|required)":(-?\d+(?:\.\d+)?)/g;
const SCALE = 10;
const ONE = 10n ** BigInt(SCALE);
const COLORS = ["#2f6fed", "#f79009", "#12b76a", "#d444f1", "#f04438", "#0ba5ec", "#875bf7", "#a15c07", "#98a2b3"];
const TOP = 8;
let token = "";

function units(value) {
  let s = String(value), negative = s.startsWith("-");
  if (negative) s = s.slice(1);
  const [whole, fraction = ""] = s.split(".");
  const u = BigInt(whole || "0") * ONE + BigInt((fraction + "0".repeat(SCALE)).slice(0, SCALE) || "0");
  return negative ? -u : u;
}
function exact(u) {
  const negative = u < 0n;
  const s = (negative ? -u : u).toString().padStart(SCALE + 1, "0");
  const fraction = s.slice(-SCALE).replace(/0+$/, "");
  return (negative ? "-" : "") + s.slice(0, -SCALE) + (fraction ? "." + fraction : "");
}
function dollars(u) {
  const [whole, fraction = ""] = exact(u).split(".");
  return "$" + whole + "." + fraction.padEnd(4, "0");
}
async function api(path) {
  const response = await fetch("/admin/api/" + path,
    {headers: {"Authorization": "Bearer " + token}, cache: "no-store"});
  const text = await response.text();
  if (!response.ok) {
    let message = "HTTP " + response.status;
    try { message = JSON.parse(text).error.message; } catch (e) { /* not the envelope */ }
    throw new Error(message);
  }
  return JSON.parse(text.replace(AMOUNT, '"$1":"$2"'));
}
function cell(row, value, attrs) {
  const td = document.createElement("td");
  td.textContent = value;
  for (const [name, v] of Object.entries(attrs || {})) td.setAttribute(name, v);
  row.appendChild(td);
  return td;
}
function money(row, name, value) {
  const u = units(value);
  const td = cell(row, dollars(u), {["data-" + name]: exact(u)});
  td.className = "num";
}
function fill(id, items, draw, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    draw(row, item);
    body.appendChild(row);
  }
  if (!items.length) {
    const row = document.createElement("tr");
    const td = cell(row, empty);
    td.colSpan = 12;
    td.className = "empty";
    body.appendChild(row);
  }
}
function svg(name, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}
// Stacked bars: one per day, a segment per series; exact figures on data-*.
function chart(id, dimension, days, series) {
  const box = document.getElementById(id);
  box.replaceChildren();
  const totals = days.map(day => series.reduce((sum, s) => sum + (s.values.get(day) || 0n), 0n));
  const max = totals.reduce((a, b) => (b > a ? b : a), 0n);
  const width = 560, height = 200, left = 8, bottom = 18, gap = 2;
  const bar = (width - left) / days.length - gap;
  const root = svg("svg", {viewBox: `0 0 ${width} ${height + bottom}`, width: "100%", role: "img",
    "data-chart": dimension, "data-max": exact(max)});
  root.appendChild(svg("line", {x1: left, x2: width, y1: height, y2: height, stroke: "#e4e7ec"}));
  days.forEach((day, i) => {
    const x = left + i * (bar + gap);
    const group = svg("g", {"data-day": day, "data-total": exact(totals[i])});
    let y = height;
    series.forEach((s, k) => {
      const value = s.values.get(day) || 0n;
      if (value === 0n) return;
      const h = max === 0n ? 0 : Math.max(1, Number(value * 10000n / max) / 10000 * (height - 10));
      y -= h;
      const rect = svg("rect", {x: x.toFixed(2), y: y.toFixed(2), width: bar.toFixed(2), height: h.toFixed(2),
        fill: COLORS[k % COLORS.length], "data-day": day, ["data-" + dimension]: s.name, "data-charged": exact(value)});
      const title = svg("title", {});
      title.textContent = `${day} ${s.name}: ${dollars(value)}`;
      rect.appendChild(title);
      group.appendChild(rect);
    });
    if (i % 5 === 0 || i === days.length - 1) {
      const last = i === days.length - 1;
      const label = svg("text", {x: (last ? x + bar : x).toFixed(2), y: height + 13,
        "text-anchor": last ? "end" : "start"});
      label.textContent = day.slice(5);
      group.appendChild(label);
    }
    root.appendChild(group);
  });
  const peak = svg("text", {x: left + 2, y: 9});
  peak.textContent = "max " + dollars(max);
  root.appendChild(peak);
  box.appendChild(root);
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, k) => {
    const item = document.createElement("span");
    item.style.setProperty("--c", COLORS[k % COLORS.length]);
    item.textContent = s.name;
    item.setAttribute("data-" + dimension, s.name);
    legend.appendChild(item);
  });
  box.appendChild(legend);
}
function byDay(rows) {
  return new Map(rows.map(r => [r.day, units(r.charged)]));
}
async function spend(dimension, since, days, total) {
  const groups = (await api(`usage?by=${dimension}&since=${since}`)).data;
  groups.sort((a, b) => (units(b.charged) > units(a.charged) ? 1 : units(b.charged) < units(a.charged) ? -1 : 0));
  const shown = groups.slice(0, TOP);
  const series = [];
  for (const g of shown) {
    const rows = (await api(`usage?by=day&since=${since}&${dimension}=${encodeURIComponent(g[dimension])}`)).data;
    series.push({name: g[dimension], values: byDay(rows)});
  }
  if (groups.length > TOP) {
    const rest = new Map(days.map(day => [day, (total.get(day) || 0n) -
      series.reduce((sum, s) => sum + (s.values.get(day) || 0n), 0n)]));
    series.push({name: "other", values: rest});
  }
  chart("chart-" + dimension, dimension, days, series);
}
async function load() {
  const status = document.getElementById("status");
  document.body.dataset.state = "loading";
  status.className = "";
  status.textContent = "Loading...";
  try {
    const today = Date.now();
    const days = [];
    for (let i = 29; i >= 0; i--) days.push(new Date(today - i * 86400000).toISOString().slice(0, 10));
    const since = days[0];
    const [accounts, recent, refused, daily] = await Promise.all([
      api("accounts"), api("usage?limit=50"), api("rejections?limit=50"), api(`usage?by=day&since=${since}`)]);
    const counts = new Map(refused.counts.map(c => [c.account, c.rejected]));
    fill("accounts", accounts.data, (row, a) => {
      row.setAttribute("data-account", a.account);
      cell(row, a.account);
      for (const name of ["available", "held", "spent", "granted"]) money(row, name, a[name]);
      const rejected = String(counts.get(a.account) || 0);
      cell(row, rejected, {"data-rejected": rejected}).className = "num";
    }, "No accounts yet.");
    const total = byDay(daily.data);
    await spend("model", since, days, total);
    await spend("key", since, days, total);
    fill("requests", recent.data, (row, r) => {
      row.setAttribute("data-request", r.request_id);
      const ended = r.ended_at.slice(0, 19).replace("T", " ");
      for (const v of [ended, r.request_id, r.account, r.key, r.model, r.outcome]) cell(row, v);
      cell(row, String(r.input_tokens)).className = "num";
      cell(row, String(r.output_tokens)).className = "num";
      money(row, "held", r.held);
      money(row, "charged", r.charged);
    }, "No requests yet.");
    fill("rejections", refused.data, (row, r) => {
      row.setAttribute("data-request", r.request_id);
      const at = r.at.slice(0, 19).replace("T", " ");
      for (const v of [at, r.request_id, r.account, r.key, r.model, r.reason]) cell(row, v);
      money(row, "required", r.required);
      money(row, "available", r.available);
    }, "No request was refused for credits.");
    status.textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.state = "ready";
  } catch (error) {
    status.className = "error";
    status.textContent = "Could not load: " + error.message;
    document.body.dataset.state = "error";
  }
}
document.getElementById("login").addEventListener("submit", event => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  if (token) load();
});
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  // Out of the address bar and the history.
  history.replaceState(null, "", location.pathname + location.search);
  load();
}
setInterval(() => { if (token && document.body.dataset.state === "ready") load(); }, 30000);
</script>
</body>
</html>
"""
