"use strict";
// The migration dashboard: polls /admin/dashboard.json, updates the table in
// place (a mode someone is choosing is never overwritten), and sends flips
// and canary actions to the admin API with the token typed in the page.

const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("gateway-token") || "";
tokenInput.addEventListener("input", () => sessionStorage.setItem("gateway-token", tokenInput.value));
const statusLine = document.getElementById("status");
const tbody = document.getElementById("routes");
const rows = new Map();      // route name -> row parts
let previous = new Map();    // counter key -> value at the previous poll
let previousAt = null;       // server time of the previous poll (ms)
let busy = false;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function pct(x) { return (x * 100).toFixed(x < 0.1 ? 2 : 1) + "%"; }

async function act(method, path, body) {
  statusLine.textContent = "…";
  statusLine.className = "";
  const headers = { "content-type": "application/json" };
  if (tokenInput.value) headers.authorization = "Bearer " + tokenInput.value;
  try {
    const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const j = await r.json().catch(() => ({}));
    statusLine.textContent = r.ok ? "done: " + method + " " + path : r.status + ": " + (j.detail || "refused");
    statusLine.className = r.ok ? "" : "bad";
    return r.ok;
  } catch (e) {
    statusLine.textContent = "no answer: " + e;
    statusLine.className = "bad";
    return false;
  } finally {
    refresh();
  }
}

function createRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.route = r.name;
  const cells = [];
  for (let i = 0; i < 7; i++) { const td = el("td"); cells.push(td); tr.append(td); }
  const change = el("td");
  const select = document.createElement("select");
  select.setAttribute("aria-label", "mode of " + r.name);
  for (const m of ["passthrough", "dual-write", "async"]) {
    const o = el("option", m);
    o.value = m;
    select.append(o);
  }
  select.value = r.mode;
  const parts = { tr, cells, select, dirty: false, canaryButtons: null, change };
  select.addEventListener("change", () => { parts.dirty = true; });
  const flip = el("button", "Flip");
  flip.dataset.action = "flip";
  flip.addEventListener("click", async () => {
    if (await act("PUT", "/admin/routes/" + encodeURIComponent(r.name) + "/mode", { mode: select.value })) {
      parts.dirty = false;
    }
  });
  change.append(select, flip);
  tr.append(change);
  return parts;
}

function setText(td, lines, cls) {
  td.replaceChildren(...lines.filter(l => l !== null).map(([text, c]) => el("div", text, c)));
  td.className = cls || "";
}

function update(parts, r, rate) {
  const [name, mode, phase, rps, errors, canary, shadow] = parts.cells;
  setText(name, [[r.name], [r.method + " " + r.path + " → " + r.upstream, "small"]]);
  setText(mode, [[r.mode, "mode " + r.mode], r.override ? ["runtime override (file: " + r.file_mode + ")", "small"] : null]);
  setText(phase, [[r.phase ? r.phase.id + (r.phase.month ? " (month " + r.phase.month + ")" : "") + ": " + r.phase.standing : "-"]]);
  const req = rate(r.name + "|req", r.requests);
  const err = rate(r.name + "|err", r.errors);
  setText(rps, [[req === null ? "…" : req.toFixed(1)]]);
  const share = req ? (err || 0) / req : null;
  setText(errors, [[share === null ? (r.requests ? pct(r.errors / r.requests) + " total" : "-") : pct(share)]], share > 0.01 ? "bad" : "");

  if (r.canary) {
    const c = r.canary;
    const lines = [];
    const head = el("div");
    const track = el("span", null, "track");
    const bar = el("span", null, "bar");
    bar.style.width = Math.round(80 * c.percent / 100) + "px";
    track.append(bar);
    head.append(track, el("span", c.mode + " " + c.percent + "% (" + (c.status || "starting") + ")", c.status === "rolled-back" ? "bad" : ""));
    lines.push(head);
    if (c.step) lines.push(el("div", "step " + c.step + " of " + c.steps, "small"));
    for (const arm of ["base", "canary"]) {
      const a = c.arms[arm];
      if (!a) continue;
      const ar = rate(r.name + "|" + arm, a.requests);
      const ae = rate(r.name + "|" + arm + "|err", a.errors);
      lines.push(el("div", arm + ": " + (ar === null ? "…" : ar.toFixed(1) + "/s") + (ar ? ", " + pct((ae || 0) / ar) + " errors" : ""), "small"));
    }
    if (c.last_decision) lines.push(el("div", "last: " + c.last_decision.action + " by " + c.last_decision.by + " — " + c.last_decision.reason, "small"));
    canary.replaceChildren(...lines);
    if (!parts.canaryButtons) {
      parts.canaryButtons = ["pause", "resume"].map(action => {
        const b = el("button", action[0].toUpperCase() + action.slice(1));
        b.dataset.action = action;
        b.addEventListener("click", () => act("POST", "/admin/canary/" + encodeURIComponent(r.name) + "/" + action, { reason: "dashboard" }));
        parts.change.append(b);
        return b;
      });
    }
  } else {
    canary.replaceChildren(el("span", "-"));
  }

  if (r.shadow) {
    setText(shadow, [[(r.shadow.match_rate === null ? "-" : pct(r.shadow.match_rate)) + " match of " + r.shadow.compared]]
      .concat((r.shadow.top || []).map(d => [d.path + " ×" + d.count, "small"])));
  } else {
    setText(shadow, [["-"]]);
  }
  // Never overwrite a choice being made.
  if (!parts.dirty && document.activeElement !== parts.select) parts.select.value = r.mode;
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const d = await (await fetch("/admin/dashboard.json", { cache: "no-store" })).json();
    const at = Date.parse(d.at);
    const seconds = previousAt === null ? 0 : (at - previousAt) / 1000;
    const counts = new Map();
    // Rates over the server's own clock; none for a too-short interval.
    const rate = (key, value) => {
      counts.set(key, value);
      const before = previous.get(key);
      if (seconds < 0.5 || before === undefined) return null;
      return Math.max(0, (value - before) / seconds);
    };
    const seen = new Set();
    for (const r of d.routes) {
      seen.add(r.name);
      if (!rows.has(r.name)) { const p = createRow(r); rows.set(r.name, p); }
      const parts = rows.get(r.name);
      update(parts, r, rate);
      tbody.append(parts.tr); // keeps the server's order
    }
    for (const [name, parts] of rows) {
      if (!seen.has(name)) { parts.tr.remove(); rows.delete(name); }
    }
    const loading = document.getElementById("loading");
    if (loading) loading.remove();
    if (seconds >= 0.5 || previousAt === null) { previous = counts; previousAt = at; }
    document.getElementById("spool").textContent = d.spool_depth;
    document.getElementById("adapters").textContent = d.adapters.length ? d.adapters.map(a => a.name + " lag " + a.lag).join(", ") : "none in this process";
    document.getElementById("at").textContent = new Date(at).toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    statusLine.textContent = "dashboard data unavailable: " + e;
    statusLine.className = "bad";
  } finally {
    busy = false;
  }
}

// A second look after a second gives rates at once; then every 2 s.
refresh();
setTimeout(() => { refresh(); setInterval(refresh, 2000); }, 1000);
