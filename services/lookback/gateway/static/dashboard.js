// Lookback's live dashboard: no build step, no library. The page holds no
// data; every request carries the key typed into the form (kept for this
// tab only, in sessionStorage), and the gateway answers only the app that
// key may read (docs/security.md). It polls the decisions of the last hour
// once a second and redraws.
"use strict";

const state = { app: "", key: "", seen: new Set(), timer: null };
const $ = (id) => document.getElementById(id);

function setStatus(text) { $("status").textContent = text; }

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  row.appendChild(td);
}

async function fetchDecisions() {
  const since = new Date(Date.now() - 3600 * 1000).toISOString();
  const out = [];
  let token = "";
  for (let page = 0; page < 5; page++) {
    const q = new URLSearchParams({ start_time: since, page_size: "1000" });
    if (token) q.set("page_token", token);
    const url = `/v1/apps/${encodeURIComponent(state.app)}/decisions?${q}`;
    const r = await fetch(url, { headers: { Authorization: `Bearer ${state.key}` } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : r.status);
    out.push(...body.decisions);
    token = body.next_page_token;
    if (!token) break;
  }
  return out;
}

function drawChart(bySource) {
  const svg = $("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const entries = Object.entries(bySource).sort((a, b) => b[1] - a[1]).slice(0, 8);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  const ns = "http://www.w3.org/2000/svg";
  entries.forEach(([source, n], i) => {
    const y = 10 + i * 25;
    const w = Math.round((n / max) * 440);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "0"); label.setAttribute("y", String(y + 14));
    label.setAttribute("class", "label"); label.textContent = source;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", "140"); bar.setAttribute("y", String(y));
    bar.setAttribute("width", String(Math.max(w, 2))); bar.setAttribute("height", "18");
    bar.setAttribute("class", "bar"); bar.dataset.source = source;
    const count = document.createElementNS(ns, "text");
    count.setAttribute("x", String(146 + w)); count.setAttribute("y", String(y + 14));
    count.setAttribute("class", "label count"); count.textContent = String(n);
    svg.append(label, bar, count);
  });
}

function render(decisions) {
  const bySource = {};
  const rejected = {};
  let installs = 0, organic = 0;
  for (const d of decisions) {
    if (d.kind === "install") {
      installs++;
      if (d.media_source === "organic") organic++;
      bySource[d.media_source] = (bySource[d.media_source] || 0) + 1;
    }
    for (const r of d.rejected || []) {
      const k = `${r.media_source || "?"}\u0000${r.reason}`;
      rejected[k] = (rejected[k] || 0) + 1;
    }
  }
  $("total").textContent = String(decisions.length);
  $("installs").textContent = String(installs);
  $("organic").textContent = String(organic);
  drawChart(bySource);

  const rbody = $("rejected").querySelector("tbody");
  rbody.replaceChildren();
  for (const [k, n] of Object.entries(rejected).sort((a, b) => b[1] - a[1])) {
    const [partner, reason] = k.split("\u0000");
    const row = document.createElement("tr");
    cell(row, partner); cell(row, reason); cell(row, n);
    rbody.appendChild(row);
  }

  const body = $("decisions").querySelector("tbody");
  body.replaceChildren();
  for (const d of decisions.slice(0, 50)) {
    const row = document.createElement("tr");
    row.dataset.decisionId = d.decision_id;
    if (!state.seen.has(d.decision_id)) row.className = "fresh";
    cell(row, (d.decided_at || "").replace("T", " ").replace(/\..*Z$/, "Z"));
    cell(row, d.install_id); cell(row, d.kind); cell(row, d.media_source);
    cell(row, d.campaign); cell(row, d.method);
    cell(row, d.latency ? `${(parseFloat(d.latency) * 1000).toFixed(1)} ms` : "");
    body.appendChild(row);
  }
  for (const d of decisions) state.seen.add(d.decision_id);
}

async function tick() {
  try {
    const decisions = await fetchDecisions();
    render(decisions);
    setStatus(`${state.app}: ${decisions.length} decisions in the last hour, updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus(`${state.app}: ${err.message}`);
  }
}

function start(app, key) {
  state.app = app; state.key = key; state.seen.clear();
  sessionStorage.setItem("lookback.app", app);
  sessionStorage.setItem("lookback.key", key);
  if (state.timer) clearInterval(state.timer);
  tick();
  state.timer = setInterval(tick, 1000);
}

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
