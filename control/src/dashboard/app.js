// volley's dashboard: pages over the API, refreshed every second. Built with
// the DOM (textContent, never innerHTML), so nothing the API returns is ever
// taken as markup. The session cookie authenticates; calls that change
// something carry the page's CSRF token.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const ROLE = document.querySelector('meta[name="role"]').content;
const REFRESH_MS = 1000;
// Delivered-so-far samples per campaign: [[time ms, finished]], for msgs/s.
const samples = new Map();
// Per campaign: the per-domain counts last seen, and what changed since
// (newest first), shown as the campaign's activity.
const lastDomains = new Map();
const activity = new Map();

function noteActivity(c) {
  const before = lastDomains.get(c.id);
  const now = new Map((c.domains || []).map((d) => [d.domain, d]));
  lastDomains.set(c.id, now);
  if (!before) return;
  const list = activity.get(c.id) || [];
  const time = new Date().toLocaleTimeString();
  for (const [domain, d] of now) {
    const was = before.get(domain) || {};
    const parts = ["delivered", "deferred", "bounced", "expired", "suppressed", "cancelled"]
      .map((k) => [k, (d[k] || 0) - (was[k] || 0)])
      .filter(([, n]) => n > 0)
      .map(([k, n]) => "+" + n + " " + k);
    if (parts.length) list.unshift([time, domain, parts.join(", ")]);
  }
  while (list.length > 15) list.pop();
  activity.set(c.id, list);
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": CSRF };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data;
  try { data = JSON.parse(text); } catch (_) { data = { detail: text }; }
  if (r.status === 401) { location.reload(); }
  if (!r.ok) throw new Error(data.detail || ("HTTP " + r.status));
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function status(text, error) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = error ? "status error" : "status";
}

function finished(c) {
  return c.delivered + c.bounced + c.expired + c.suppressed + c.cancelled;
}

function note(c) {
  const now = Date.now();
  const list = samples.get(c.id) || [];
  list.push([now, finished(c)]);
  while (list.length > 600) list.shift();
  samples.set(c.id, list);
}

// msgs/s over the last few samples at each sample, for the chart (the
// store's counts move at each group commit, a few seconds apart: a window
// smooths the steps).
const WINDOW = 5;
function rates(id) {
  const list = samples.get(id) || [];
  const out = [];
  for (let i = 1; i < list.length; i++) {
    const j = Math.max(0, i - WINDOW);
    const dt = (list[i][0] - list[j][0]) / 1000;
    if (dt > 0) out.push(Math.max(0, list[i][1] - list[j][1]) / dt);
  }
  return out;
}

function chart(id, width, height) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("id", "chart-" + id);
  const r = rates(id);
  const max = Math.max(1, ...r);
  const points = r.map((v, i) => {
    const x = r.length < 2 ? 0 : (i / (r.length - 1)) * (width - 4) + 2;
    const y = height - 2 - (v / max) * (height - 14);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 10);
  label.textContent = "max " + Math.round(max).toLocaleString() + " msgs/s";
  svg.append(label);
  return svg;
}

function eta(c) {
  if (c.eta_s === null || c.eta_s === undefined) return "-";
  const s = Math.round(c.eta_s);
  return s < 90 ? s + " s" : Math.round(s / 60) + " min";
}

function stateSpan(state, id) {
  return el("span", { class: "state " + state, id }, state);
}

// The holds in force (admin tokens only; none otherwise).
async function holdsNow() {
  if (ROLE !== "admin") return [];
  try { return (await api("GET", "/v1/queue/holds")).holds || []; } catch (_) { return []; }
}

function heldCampaign(holds, id) {
  return holds.some((h) => String(h.campaign) === String(id));
}

// ---- pages -----------------------------------------------------------

const pages = {
  async campaigns(view) {
    const data = await api("GET", "/v1/campaigns?limit=100");
    const list = data.campaigns || [];
    const [shown, holds] = await Promise.all([
      Promise.all(list.slice(0, 20).map((c) => api("GET", "/v1/campaigns/" + c.id))),
      holdsNow(),
    ]);
    shown.forEach(note);
    const rows = shown.map((c) => [
      el("a", { href: "#/campaign/" + c.id, id: "campaign-link-" + c.id }, "#" + c.id),
      el("span", {}, stateSpan(c.state, "state-" + c.id),
        heldCampaign(holds, c.id) ? el("span", { class: "held", id: "held-" + c.id }, " held") : ""),
      el("progress", { id: "progress-" + c.id, max: Math.max(1, c.recipients), value: finished(c) }),
      finished(c).toLocaleString() + " / " + c.recipients.toLocaleString(),
      Math.round(c.msgs_per_s).toLocaleString(),
      eta(c),
      chart(c.id, 160, 36),
    ]);
    view.replaceChildren(
      el("h2", {}, "Campaigns"),
      rows.length ? table(["campaign", "state", "progress", "done", "msgs/s", "ETA", "msgs/s over time"], rows, { id: "campaigns" })
        : el("p", { id: "no-campaigns" }, "No campaigns yet: submit one with volley campaign submit or POST /v1/campaigns."));
  },

  async campaign(view, id) {
    const [c, ev, holds] = await Promise.all([
      api("GET", "/v1/campaigns/" + id),
      api("GET", "/v1/campaigns/" + id + "/events?limit=15").catch(() => ({ events: [] })),
      holdsNow(),
    ]);
    note(c);
    noteActivity(c);
    const events = (ev.events || []).map((e) => [e.at, e.type,
      (e.data && (e.data.recipient || e.data.email)) || "",
      (e.data && (e.data.reply || e.data.url || "")) || ""]);
    const act = (what) => async () => {
      try { await api("POST", "/v1/campaigns/" + id + "/" + what); status(what + ": done"); refresh(); }
      catch (e) { status(what + ": " + e.message, true); }
    };
    const open = c.state !== "completed" && c.state !== "cancelled";
    const counts = ["recipients", "pending", "in_flight", "deferred", "delivered", "bounced", "expired",
      "suppressed", "cancelled"];
    const engaged = ["acknowledged", "replied", "clicked", "opened", "unsubscribed", "complained"];
    const domains = (c.domains || []).map((d) => [d.domain, d.recipients, d.delivered, d.deferred, d.bounced, d.pending + d.in_flight]);
    const reasons = (c.reasons || []).map((r) => [r.code + " " + r.enhanced, r.count, r.sample]);
    view.replaceChildren(
      el("h2", {}, "Campaign #" + c.id + " ", stateSpan(c.state, "state"),
        heldCampaign(holds, c.id) ? el("span", { class: "held", id: "held" }, " held (volley queue release --campaign " + c.id + ")") : ""),
      el("p", {},
        el("progress", { id: "progress", max: Math.max(1, c.recipients), value: finished(c) }), " ",
        el("span", { id: "done" }, finished(c).toLocaleString() + " of " + c.recipients.toLocaleString()),
        " · " + Math.round(c.msgs_per_s).toLocaleString() + " msgs/s · ETA " + eta(c)),
      el("p", {},
        el("button", { id: "suspend", onclick: act("suspend"), disabled: !(open && c.state !== "suspended") }, "Suspend"), " ",
        el("button", { id: "resume", onclick: act("resume"), disabled: c.state !== "suspended" }, "Resume"), " ",
        el("button", { id: "cancel", onclick: act("cancel"), disabled: !open }, "Cancel")),
      chart(c.id, 600, 120),
      el("h3", {}, "Recipients"),
      table(counts, [counts.map((k) => (c[k] || 0).toLocaleString())], { id: "counts" }),
      table(engaged, [engaged.map((k) => (c[k] || 0).toLocaleString())], { id: "engaged" }),
      el("h3", {}, "Domains"),
      table(["domain", "recipients", "delivered", "deferred", "bounced", "unsent"], domains, { id: "domains" }),
      el("h3", {}, "Top bounce reasons"),
      reasons.length ? table(["code", "recipients", "example reply"], reasons, { id: "reasons" }) : el("p", {}, "None."),
      el("h3", {}, "Activity (as the counts move)"),
      (activity.get(c.id) || []).length ? table(["time", "domain", "change"], activity.get(c.id), { id: "activity" })
        : el("p", { id: "activity" }, "Nothing has moved since the page opened."),
      el("h3", {}, "Events (bounces, complaints, unsubscribes, clicks; deliveries when a webhook asks for them)"),
      events.length ? table(["at", "type", "recipient", "detail"], events, { id: "events" }) : el("p", { id: "events" }, "None yet."));
  },

  async sites(view) {
    const text = await (await fetch("/metrics", { credentials: "same-origin" })).text();
    const sites = new Map();
    const get = (s) => { if (!sites.has(s)) sites.set(s, { connections: 0, delivered: 0, deferred: 0, bounced: 0, paused: "" }); return sites.get(s); };
    for (const line of text.split("\n")) {
      let m = line.match(/^volley_messages_total\{outcome="(\w+)",site="([^"]*)"\} (\S+)/);
      if (m && ["delivered", "deferred", "bounced"].includes(m[1])) get(m[2])[m[1]] += Number(m[3]);
      m = line.match(/^volley_connections\{site="([^"]*)"\} (\S+)/);
      if (m) get(m[1]).connections = Number(m[2]);
      m = line.match(/^volley_site_paused\{site="([^"]*)",reason="((?:[^"\\]|\\.)*)"\} /);
      if (m) get(m[1]).paused = m[2].replace(/\\(.)/g, "$1");
    }
    const holds = await holdsNow();
    // In a fleet the gateways send: their reported per-site figures.
    let fleetRows = [];
    if (ROLE === "admin" && sites.size === 0) {
      try {
        const gws = (await api("GET", "/v1/gateways")).gateways || [];
        const per = new Map();
        for (const g of gws) {
          for (const f of g.sites || []) {
            const p = per.get(f.site) || { rate: 0, failures: 0, samples: 0, gateways: 0 };
            p.rate += f.rate; p.failures += f.failure_rate * f.samples; p.samples += f.samples; p.gateways += 1;
            per.set(f.site, p);
          }
        }
        fleetRows = [...per.entries()].sort((a, b) => b[1].rate - a[1].rate).map(([site, p]) => [site, p.gateways,
          p.rate.toFixed(1), p.samples ? (100 * p.failures / p.samples).toFixed(1) + " %" : "-"]);
      } catch (_) { fleetRows = []; }
    }
    const heldSites = new Set(holds.filter((h) => h.site).map((h) => h.site));
    const rows = [...sites.entries()].filter(([s]) => s !== "none").sort((a, b) => b[1].delivered - a[1].delivered).map(([s, v]) => {
      const tried = v.delivered + v.deferred + v.bounced;
      return [s, v.connections, v.delivered.toLocaleString(), v.deferred.toLocaleString(), v.bounced.toLocaleString(),
        tried ? (100 * v.deferred / tried).toFixed(1) + " %" : "-",
        [...heldSites].some((h) => s === h || s === "route:" + h || s.split(",").includes(h)) ? el("span", { class: "held" }, "held") : "",
        v.paused ? el("span", { class: "held", title: v.paused }, "paused: " + v.paused) : ""];
    });
    view.replaceChildren(
      el("h2", {}, "Sites"),
      rows.length ? table(["site", "connections", "delivered", "deferred", "bounced", "deferral rate", "hold", "paused"], rows, { id: "sites" })
        : fleetRows.length ? table(["site", "gateways sending", "msgs/s (learned)", "deferral rate"], fleetRows, { id: "sites" })
          : el("p", {}, "Nothing sent yet (in a fleet, each gateway's /metrics has its connections and pauses)."),
      holds.length ? el("p", { id: "holds" }, "Held: " + holds.map((h) => Object.entries(h)[0].join(" ")).join(", ")) : "");
  },

  async gateways(view) {
    let data;
    try { data = await api("GET", "/v1/gateways"); } catch (e) {
      view.replaceChildren(el("h2", {}, "Gateways"), el("p", { id: "no-gateways" }, e.message));
      return;
    }
    const list = data.gateways || [];
    const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "-");
    const rows = list.map((g) => [g.name, el("span", { class: g.state, id: "gateway-state-" + g.name }, g.state),
      g.leases, (g.delivered || 0).toLocaleString(), when(g.last_contact)]);
    // Learned delivery rate per (gateway, site) as a heat map: darker is faster.
    const sites = [...new Set(list.flatMap((g) => (g.sites || []).map((s) => s.site)))].sort();
    const max = Math.max(1, ...list.flatMap((g) => (g.sites || []).map((s) => s.rate)));
    const heat = list.map((g) => [g.name, ...sites.map((site) => {
      const f = (g.sites || []).find((s) => s.site === site);
      if (!f) return "-";
      const cell = el("span", { class: "cell", title: (100 * f.failure_rate).toFixed(1) + " % deferred, " + f.samples + " samples" },
        f.rate.toFixed(1));
      const shade = Math.round(230 - 180 * (f.rate / max));
      cell.style.background = "rgb(" + shade + "," + shade + ",255)";
      return cell;
    })]);
    view.replaceChildren(
      el("h2", {}, "Gateways"),
      rows.length ? table(["gateway", "state", "leases", "delivered", "last contact"], rows, { id: "gateways" })
        : el("p", {}, "No gateways: this control plane delivers itself (volley run)."),
      sites.length ? el("h3", {}, "Learned delivery rate per site (msgs/s; darker is faster)") : "",
      sites.length ? table(["gateway", ...sites], heat, { id: "figures", class: "heat" }) : "");
  },

  async suppressions(view, _id, first) {
    if (!first) return; // the page is a form: not redrawn every second
    const results = el("div", { id: "search-results" });
    const input = el("input", { id: "search", type: "search", placeholder: "address@example.com" });
    const search = async (ev) => {
      if (ev) ev.preventDefault();
      try {
        const q = input.value.trim();
        const data = await api("GET", "/v1/suppressions?limit=100" + (q ? "&address=" + encodeURIComponent(q) : ""));
        const rows = (data.suppressions || []).map((s) => [s.address, s.domain, s.reason, s.since,
          el("button", { class: "remove", onclick: async () => {
            await api("DELETE", "/v1/suppressions?address=" + encodeURIComponent(s.address) + "&domain=" + encodeURIComponent(s.domain));
            search();
          } }, "Remove")]);
        results.replaceChildren(rows.length ? table(["address", "sending domain", "reason", "since", ""], rows, { id: "suppression-table" })
          : el("p", { id: "no-results" }, "Not suppressed."));
      } catch (e) { results.replaceChildren(el("p", { class: "error" }, e.message)); }
    };
    const address = el("input", { id: "add-address", type: "email", placeholder: "address to suppress", required: true });
    const add = async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/v1/suppressions", { address: address.value.trim(), reason: "manual" });
        input.value = address.value.trim();
        address.value = "";
        search();
      } catch (e) { status("suppress: " + e.message, true); }
    };
    view.replaceChildren(
      el("h2", {}, "Suppressions"),
      el("form", { id: "search-form", onsubmit: search }, input, " ", el("button", { id: "search-button", type: "submit" }, "Search")),
      results,
      el("h3", {}, "Suppress an address (every sending domain)"),
      el("form", { id: "add-form", onsubmit: add }, address, " ", el("button", { id: "add-button", type: "submit" }, "Suppress")));
    search();
  },
};

let current = "";
let busy = false;

async function refresh(first) {
  if (busy) return;
  busy = true;
  const hash = location.hash || "#/campaigns";
  const [, page, id] = hash.split("/");
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#/" + (page === "campaign" ? "campaigns" : page));
  }
  const render = pages[page] || pages.campaigns;
  try {
    await render(document.getElementById("view"), id, first);
    if (!first || page !== "suppressions") status("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    status(e.message, true);
  } finally {
    busy = false;
  }
}

window.addEventListener("hashchange", () => { current = location.hash; refresh(true); });
current = location.hash;
refresh(true);
setInterval(() => refresh(false), REFRESH_MS);
