// Lookback's live dashboard: no build step, no library. The page holds no
// data; every request carries the key typed into the form (kept for this
// tab only, in sessionStorage), and the gateway answers only the app that
// key may read (docs/security.md).
//
// - The live table and the last-hour chart follow the app's feed: the
//   Server-Sent Events of GET /v1/apps/{app}/decisions:watch, read with
//   fetch (so the key goes in a header), resumed from the last event's id
//   when the connection drops; the hour before the page opened comes from
//   GET /v1/apps/{app}/decisions.
// - The last-day chart, the counts, revenue and rejected touches come from
//   the reports (GET /v1/apps/{app}/reports), read again every 2 seconds.
// - Choosing a decision of the live table shows its explanation (GET
//   /v1/apps/{app}/decisions/{id}:explain): every candidate and its verdict.
"use strict";

const COLORS = ["#3b7ddd", "#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4", "#bf399e", "#8d8d8d"];
const OTHER = "other";
const state = { app: "", key: "", cursor: "", rows: new Map(), order: [], timer: null, abort: null, generation: 0, chosen: "" };
const $ = (id) => document.getElementById(id);
const headers = () => ({ Authorization: `Bearer ${state.key}` });
const appPath = () => `/v1/apps/${encodeURIComponent(state.app)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setStatus(text) { $("status").textContent = text; }

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
}

async function getJson(url) {
  const r = await fetch(url, { headers: headers() });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : String(r.status));
  return body;
}

// --- charts --------------------------------------------------------------

function colorsFor(totals) {
  const sources = Object.entries(totals).sort((a, b) => b[1] - a[1]).map((e) => e[0]);
  const top = sources.slice(0, COLORS.length - 1);
  const color = {};
  top.forEach((s, i) => { color[s] = COLORS[i]; });
  return { color, group: (s) => (s in color ? s : OTHER) };
}

// buckets: [{label, counts: {source: n}}]; stacked bars, one per bucket.
function drawStacked(svgId, legendId, buckets) {
  const svg = $(svgId);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const totals = {};
  for (const b of buckets) for (const [s, n] of Object.entries(b.counts)) totals[s] = (totals[s] || 0) + n;
  const { color, group } = colorsFor(totals);
  const ns = "http://www.w3.org/2000/svg";
  const width = 640, height = 200, bottom = 20, left = 30;
  const max = Math.max(1, ...buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0)));
  const slot = (width - left) / Math.max(1, buckets.length);
  const scale = (height - bottom - 10) / max;
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", "0"); top.setAttribute("y", "10"); top.setAttribute("class", "axis");
  top.textContent = String(max);
  svg.appendChild(top);
  buckets.forEach((b, i) => {
    let y = height - bottom;
    const merged = {};
    for (const [s, n] of Object.entries(b.counts)) merged[group(s)] = (merged[group(s)] || 0) + n;
    for (const [s, n] of Object.entries(merged).sort()) {
      const h = Math.max(1, n * scale);
      y -= h;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(left + i * slot + 1)); rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(Math.max(slot - 2, 1))); rect.setAttribute("height", String(h));
      rect.setAttribute("class", "bar"); rect.setAttribute("fill", color[s] || COLORS[COLORS.length - 1]);
      rect.dataset.source = s; rect.dataset.count = String(n);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${b.label} ${s}: ${n}`;
      rect.appendChild(title);
      svg.appendChild(rect);
    }
    if (i % Math.ceil(buckets.length / 8) === 0) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(left + i * slot)); label.setAttribute("y", String(height - 5));
      label.setAttribute("class", "axis"); label.textContent = b.label;
      svg.appendChild(label);
    }
  });
  const legend = $(legendId);
  legend.replaceChildren();
  for (const s of [...Object.keys(color), ...(Object.keys(totals).some((s) => !(s in color)) ? [OTHER] : [])]) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color[s] || COLORS[COLORS.length - 1];
    span.append(swatch, document.createTextNode(s));
    legend.appendChild(span);
  }
}

// --- the reports -----------------------------------------------------------

function revenueText(revenue) {
  const parts = Object.entries(revenue || {}).filter(([, v]) => parseFloat(v) !== 0).sort();
  return parts.length ? parts.map(([c, v]) => `${v} ${c}`).join(", ") : "0";
}

function addRevenue(into, revenue) {
  // Exact decimal sums, in millionths (the reports' own precision).
  for (const [c, v] of Object.entries(revenue || {})) {
    const [whole, frac = ""] = v.replace("-", "").split(".");
    let units = BigInt(whole) * 1000000n + BigInt((frac + "000000").slice(0, 6));
    if (v.startsWith("-")) units = -units;
    into[c] = (into[c] || 0n) + units;
  }
}

function unitsText(units) {
  const sign = units < 0n ? "-" : "";
  const abs = units < 0n ? -units : units;
  const frac = (abs % 1000000n).toString().padStart(6, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${sign}${abs / 1000000n}.${frac}`;
}

async function refreshReports() {
  const now = Date.now();
  const start = new Date(now - 23 * 3600 * 1000);
  const q = new URLSearchParams({ start_time: start.toISOString(), end_time: new Date(now).toISOString(), bucket: "hour", group_by: "media_source" });
  const report = await getJson(`${appPath()}/reports?${q}`);
  const hours = new Map();
  const first = Date.parse(report.start_time);
  for (let t = first; t < Date.parse(report.end_time); t += 3600 * 1000) {
    hours.set(t, { label: new Date(t).toISOString().slice(11, 16), counts: {} });
  }
  const sums = { installs: 0, organic: 0, reattributions: 0, reengagements: 0, events: 0 };
  const revenue = {};
  const bySource = new Map();
  const rejected = {};
  for (const row of report.rows) {
    const ms = row.media_source;
    const installs = Number(row.installs);
    const hour = hours.get(Date.parse(row.bucket_start));
    if (hour && installs) hour.counts[ms] = (hour.counts[ms] || 0) + installs;
    sums.installs += installs;
    if (ms === "organic") sums.organic += installs;
    sums.reattributions += Number(row.reattributions);
    sums.reengagements += Number(row.reengagements);
    sums.events += Number(row.events);
    addRevenue(revenue, row.revenue);
    const s = bySource.get(ms) || { clicks: 0, installs: 0, reattributions: 0, reengagements: 0, events: 0, revenue: {} };
    for (const k of ["clicks", "installs", "reattributions", "reengagements", "events"]) s[k] += Number(row[k]);
    addRevenue(s.revenue, row.revenue);
    bySource.set(ms, s);
    for (const [reason, n] of Object.entries(row.rejected_touches || {})) {
      const k = `${ms || "?"}\u0000${reason}`;
      rejected[k] = (rejected[k] || 0) + Number(n);
    }
  }
  for (const k of Object.keys(sums)) $(k).textContent = String(sums[k]);
  $("revenue").textContent = Object.keys(revenue).length
    ? Object.entries(revenue).sort().map(([c, u]) => `${unitsText(u)} ${c}`).join(", ") : "0";
  drawStacked("day-chart", "day-legend", [...hours.values()]);

  const sbody = $("sources").querySelector("tbody");
  sbody.replaceChildren();
  for (const [ms, s] of [...bySource.entries()].sort((a, b) => b[1].installs - a[1].installs)) {
    const row = document.createElement("tr");
    row.dataset.source = ms;
    cell(row, ms);
    for (const k of ["clicks", "installs", "reattributions", "reengagements", "events"]) cell(row, s[k], "num");
    cell(row, Object.keys(s.revenue).length
      ? Object.entries(s.revenue).sort().map(([c, u]) => `${unitsText(u)} ${c}`).join(", ") : "", "num");
    sbody.appendChild(row);
  }
  const rbody = $("rejected").querySelector("tbody");
  rbody.replaceChildren();
  for (const [k, n] of Object.entries(rejected).sort((a, b) => b[1] - a[1])) {
    const [partner, reason] = k.split("\u0000");
    const row = document.createElement("tr");
    cell(row, partner); cell(row, reason); cell(row, n, "num");
    rbody.appendChild(row);
  }
}

// --- the feed ---------------------------------------------------------------

function entryOf(kind, data) {
  if (kind === "decision") {
    const d = data.decision;
    return { id: d.decision_id, at: d.decided_at, install: d.install_id, kind: d.kind, source: d.media_source,
             campaign: d.campaign, method: d.method, latency: d.latency, revenue: "", decision: d };
  }
  const e = data.event;
  return { id: `event:${e.event_id}`, at: e.occurred_at, install: e.install_id, kind: `event: ${e.name || "?"}`,
           source: e.media_source, campaign: e.campaign, method: "", latency: "",
           revenue: e.revenue ? `${e.revenue} ${e.currency}` : "", decision: null };
}

function remember(entry, fresh) {
  if (state.rows.has(entry.id)) return;
  entry.fresh = fresh;
  state.rows.set(entry.id, entry);
  state.order.push(entry.id);
  if (state.order.length > 5000) state.rows.delete(state.order.shift());
}

function renderFeed() {
  const hourAgo = Date.now() - 3600 * 1000;
  const buckets = [];
  for (let i = 0; i < 12; i++) {
    const t = hourAgo + i * 300 * 1000;
    buckets.push({ label: new Date(t).toISOString().slice(11, 16), counts: {} });
  }
  let total = 0;
  for (const id of state.order) {
    const e = state.rows.get(id);
    if (!e.decision) continue;
    const at = Date.parse(e.at);
    if (!(at >= hourAgo)) continue;
    if (e.kind !== "none") total++;
    if (e.kind === "install") {
      const b = buckets[Math.min(11, Math.floor((at - hourAgo) / (300 * 1000)))];
      b.counts[e.source] = (b.counts[e.source] || 0) + 1;
    }
  }
  $("total").textContent = String(total);
  drawStacked("hour-chart", "hour-legend", buckets);
  const body = $("decisions").querySelector("tbody");
  body.replaceChildren();
  for (const id of state.order.slice(-50).reverse()) {
    const e = state.rows.get(id);
    const row = document.createElement("tr");
    if (e.decision) row.dataset.decisionId = e.id; else row.dataset.eventId = e.id.slice(6);
    if (e.fresh) row.className = "fresh";
    if (e.id === state.chosen) row.className = "chosen";
    cell(row, (e.at || "").replace("T", " ").replace(/\..*Z$/, "Z"));
    cell(row, e.install); cell(row, e.kind); cell(row, e.source);
    cell(row, e.campaign); cell(row, e.method);
    cell(row, e.latency ? `${(parseFloat(e.latency) * 1000).toFixed(1)} ms` : "", "num");
    cell(row, e.revenue, "num");
    body.appendChild(row);
  }
}

async function loadHour(generation) {
  const since = new Date(Date.now() - 3600 * 1000).toISOString();
  let token = "";
  const before = [];
  for (let page = 0; page < 5; page++) {
    const q = new URLSearchParams({ start_time: since, page_size: "1000" });
    if (token) q.set("page_token", token);
    const body = await getJson(`${appPath()}/decisions?${q}`);
    before.push(...body.decisions);
    token = body.next_page_token;
    if (!token) break;
  }
  if (generation !== state.generation) return;
  // Newest first from the list; the feed's own entries keep their place.
  const streamed = state.order.splice(0);
  for (const d of before.reverse()) remember(entryOf("decision", { decision: d }), false);
  for (const id of streamed) if (!state.order.includes(id)) state.order.push(id);
  renderFeed();
}

function handleEvent(block, generation) {
  let id = "", kind = "", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(": ");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 2);
    if (field === "id") id = value; else if (field === "event") kind = value; else if (field === "data") data += value;
  }
  if (!data || generation !== state.generation) return;
  if (kind === "error") { const err = JSON.parse(data); throw new Error(`${err.code}: ${err.message}`); }
  if (id) state.cursor = id;
  remember(entryOf(kind, JSON.parse(data)), true);
  renderFeed();
}

async function watch(generation) {
  let opened = false;
  while (generation === state.generation) {
    try {
      const h = headers();
      if (state.cursor) h["Last-Event-ID"] = state.cursor;
      const r = await fetch(`${appPath()}/decisions:watch`, { headers: h, signal: state.abort.signal });
      if (!r.ok) {
        const body = await r.json();
        throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : String(r.status));
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.startsWith(": watching") && !opened) {
            opened = true;  // the feed is in place: the hour before it can be read
            loadHour(generation).catch((err) => setStatus(`${state.app}: ${err.message}`));
          }
          handleEvent(block, generation);
        }
      }
    } catch (err) {
      if (generation !== state.generation) return;
      setStatus(`${state.app}: ${err.message}`);
    }
    await sleep(1000);  // then resume after the last event seen
  }
}

async function tick(generation) {
  try {
    await refreshReports();
    if (generation !== state.generation) return;
    renderFeed();
    setStatus(`${state.app}: live, reports updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus(`${state.app}: ${err.message}`);
  }
}

function start(app, key) {
  state.generation++;
  if (state.abort) state.abort.abort();
  if (state.timer) clearInterval(state.timer);
  Object.assign(state, { app, key, cursor: "", rows: new Map(), order: [], abort: new AbortController(), chosen: "" });
  $("explain").hidden = true;
  sessionStorage.setItem("lookback.app", app);
  sessionStorage.setItem("lookback.key", key);
  const generation = state.generation;
  watch(generation);
  tick(generation);
  state.timer = setInterval(() => tick(generation), 2000);
}

// --- explanations ----------------------------------------------------------

async function explain(decisionId) {
  state.chosen = decisionId;
  renderFeed();
  const generation = state.generation;
  const body = await getJson(`${appPath()}/decisions/${encodeURIComponent(decisionId)}:explain`);
  if (generation !== state.generation || state.chosen !== decisionId) return;
  const d = body.decision, x = body.explanation || {};
  $("explain-title").textContent = `${d.kind} of install ${d.install_id}`;
  const who = d.media_source + (d.campaign ? ` / ${d.campaign}` : "");
  const contributors = (d.contributors || []).length ? `; contributors ${d.contributors.join(", ")}` : "";
  $("explain-summary").textContent =
    `${who} by ${d.method}${d.click_id ? ` (click ${d.click_id})` : ""}${contributors};` +
    ` settings version ${x.settings_version || "?"}; decision ${d.decision_id}`;
  const tbody = $("explain-candidates").querySelector("tbody");
  tbody.replaceChildren();
  for (const c of x.candidates || []) {
    const row = document.createElement("tr");
    const detail = [];
    if (c.verdict === "outside_window" && c.window) detail.push(`window ${c.window}`);
    if (c.verdict === "rejected" && c.reason) detail.push(c.reason);
    if (c.contributor) detail.push("contributor");
    if (c.is_retargeting) detail.push("retargeting");
    cell(row, c.verdict, `verdict-${c.verdict}`);
    cell(row, c.media_source || "-"); cell(row, c.campaign || "-"); cell(row, c.click_id || "-");
    cell(row, c.touch_type); cell(row, c.method);
    cell(row, (c.engaged_at || "").replace("T", " ").replace(/\..*Z$/, "Z"));
    cell(row, detail.join(", "));
    tbody.appendChild(row);
  }
  if (!(x.candidates || []).length) {
    const row = document.createElement("tr");
    cell(row, "no candidate touch: nothing of this device was stored");
    tbody.appendChild(row);
  }
  $("explain").hidden = false;
}

$("decisions").querySelector("tbody").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-decision-id]");
  if (!row) return;
  explain(row.dataset.decisionId).catch((err) => setStatus(`${state.app}: ${err.message}`));
});

$("connect").addEventListener("submit", (e) => {
  e.preventDefault();
  start($("app").value.trim(), $("key").value.trim());
});

// A link may name the app and key in its fragment (never sent to a server):
// /dashboard#app=com.example.app&key=...
const fragment = new URLSearchParams(location.hash.slice(1));
const app = fragment.get("app") || sessionStorage.getItem("lookback.app") || "";
const key = fragment.get("key") || sessionStorage.getItem("lookback.key") || "";
if (fragment.get("key")) history.replaceState(null, "", location.pathname);
$("app").value = app;
if (app && key) start(app, key);
