// swarmq dashboard. Plain JavaScript, no build step, no third-party code:
// everything it shows and does goes through the JSON API under /api/v1, and
// live updates come from its server-sent events (/api/v1/events).
"use strict";

const API = "/api/v1";
const WINDOW_MS = 15 * 60 * 1000;

const state = {
  me: null,          // {user, role, open}
  series: [],        // SeriesPoint[], oldest first
  overview: null,    // latest Overview
  events: null,      // EventSource
  page: null,        // current page renderer's refresh function
};

// ---------- helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replaces the children of `root`; nested arrays and nulls are allowed.
function render(root, ...children) {
  root.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const res = await fetch(API + path, { credentials: "same-origin", ...options });
  if (res.status === 204) return null;
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const e = body && body.error ? body.error : { code: "error", message: res.statusText };
    if (res.status === 401 && path !== "/login") showLogin();
    throw new ApiError(res.status, e.code, e.message);
  }
  return body;
}

function fmtNum(n, digits = 0) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

function fmtMs(n) {
  if (n === null || n === undefined) return "–";
  return n < 10 ? `${n.toFixed(2)} ms` : `${fmtNum(n, 1)} ms`;
}

function fmtTime(us) {
  if (!us) return "–";
  return new Date(us / 1000).toLocaleString();
}

function fmtAgo(us) {
  if (!us) return "–";
  const s = Math.max(0, (Date.now() - us / 1000) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

function badge(text) {
  return h("span", { class: `badge ${text}` }, text);
}

function toast(message, bad = false) {
  const t = $("#toast");
  t.textContent = message;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

// Asks for confirmation in a modal; resolves true on Confirm.
function confirmAction(text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

const isAdmin = () => state.me && state.me.role === "admin";

// ---------- charts ----------

// A line chart of `series` (arrays of [t_ms, value]) over the last 15 minutes.
function lineChart(title, lines, unit) {
  const W = 600, H = 140, L = 44, B = 16, T = 6;
  const now = Date.now();
  const t0 = now - WINDOW_MS;
  let max = 0;
  for (const l of lines) for (const [, v] of l.points) if (v !== null && v > max) max = v;
  max = max > 0 ? max * 1.1 : 1;
  const x = (t) => L + ((t - t0) / WINDOW_MS) * (W - L);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const add = (tag, attrs, text) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    add("line", { class: "grid", x1: L, x2: W, y1: y(v), y2: y(v) });
    add("text", { x: 2, y: y(v) + 3 }, fmtNum(v, v < 10 ? 1 : 0));
  }
  for (const m of [15, 10, 5, 0]) {
    add("text", { x: x(now - m * 60000) - (m === 0 ? 20 : 8), y: H - 3 }, m === 0 ? "now" : `-${m}m`);
  }
  lines.forEach((l, i) => {
    let d = "";
    let pen = false;
    for (const [t, v] of l.points) {
      if (t < t0 || v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    }
    if (d) add("path", { class: `line c${i}`, d });
  });
  const legend = h("div", { class: "legend" }, lines.map((l, i) => {
    const last = [...l.points].reverse().find(([, v]) => v !== null && v !== undefined);
    return h("span", {}, h("i", { class: `c${i}` }), `${l.name}: `, last ? `${fmtNum(last[1], 2)}${unit}` : "–");
  }));
  return h("div", { class: "chart", "data-chart": title }, h("h3", {}, title), svg, legend);
}

// ---------- pages ----------

function setTitle(text) {
  document.title = `${text} · swarmq`;
  return h("h1", { id: "page-title" }, text);
}

function card(label, value, key) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value", "data-metric": key }, value));
}

async function pageOverview(main) {
  if (!state.series.length) {
    const s = await api("/series?minutes=15");
    state.series = s.points;
  }
  const ov = state.overview || await api("/overview");
  state.overview = ov;
  const now = ov.now || {};
  const t = ov.totals;
  const pick = (k) => state.series.map((p) => [p.t_ms, p[k]]);
  render(main, 
    setTitle("Overview"),
    ov.queues_without_consumer.length
      ? h("p", { class: "warning", id: "no-consumer-warning" },
        `Tasks waiting with no worker: ${ov.queues_without_consumer.join(", ")}`)
      : null,
    h("div", { class: "cards" },
      card("submitted / s", fmtNum(now.submitted_per_s, 1), "submitted_per_s"),
      card("completed / s", fmtNum(now.completed_per_s, 1), "completed_per_s"),
      card("failed / s", fmtNum(now.failed_per_s, 1), "failed_per_s"),
      card("latency p50", fmtMs(now.p50_ms), "p50_ms"),
      card("latency p99", fmtMs(now.p99_ms), "p99_ms"),
      card("waiting", fmtNum(ov.waiting), "waiting"),
      card("in flight", fmtNum(ov.in_flight), "in_flight"),
      card("workers online", fmtNum(ov.workers_online), "workers_online"),
      card("connections", fmtNum(ov.connections), "connections"),
      card("submitted (since start)", fmtNum(t.submitted), "submitted"),
      card("succeeded", fmtNum(t.succeeded), "succeeded"),
      card("failed", fmtNum(t.failed), "failed"),
      card("redelivered", fmtNum(t.redelivered), "redelivered"),
      card("rejected", fmtNum(t.rejected), "rejected"),
      card("history", ov.history.enabled ? fmtNum(ov.history.retained) : "off", "history"),
    ),
    h("div", { class: "charts" },
      lineChart("Throughput (tasks/s)", [
        { name: "submitted", points: pick("submitted_per_s") },
        { name: "completed", points: pick("completed_per_s") },
      ], "/s"),
      lineChart("Latency, submission to result (ms)", [
        { name: "p50", points: pick("p50_ms") },
        { name: "p99", points: pick("p99_ms") },
      ], " ms"),
      lineChart("Failures and redeliveries (/s)", [
        { name: "failed", points: pick("failed_per_s") },
        { name: "redelivered", points: pick("redelivered_per_s") },
      ], "/s"),
      lineChart("Connections and queue depth", [
        { name: "connections", points: pick("connections") },
        { name: "waiting", points: pick("waiting") },
        { name: "in flight", points: pick("in_flight") },
      ], ""),
    ),
    h("p", { class: "muted" }, `swarmq ${ov.version}, up ${fmtNum(ov.uptime_s)} s. One point per second, last 15 minutes.`),
  );
}

async function purgeQueue(name) {
  if (!await confirmAction(`Purge queue “${name}”? Every task waiting in it is revoked; its requesters get a “revoked” result. Tasks with workers finish normally.`)) return;
  try {
    const r = await api(`/queues/${encodeURIComponent(name)}/purge`, { method: "POST" });
    toast(`Purged ${r.purged} task(s) from ${name}`);
  } catch (e) {
    toast(`Purge failed: ${e.message}`, true);
  }
  refresh();
}

async function pageQueues(main) {
  const { queues } = await api("/queues");
  const rows = queues.map((q) => h("tr", {
    class: `clickable${q.warning ? " warn" : ""}`, "data-queue": q.name,
    onclick: (ev) => { if (ev.target.tagName !== "BUTTON") location.hash = `#/queues/${encodeURIComponent(q.name)}`; },
  },
  h("td", {}, h("strong", {}, q.name), q.warning ? h("div", { class: "warning", "data-warning": q.name }, q.warning) : null),
  h("td", { class: "num", "data-col": "waiting" }, fmtNum(q.waiting)),
  h("td", { class: "num", "data-col": "scheduled" }, fmtNum(q.scheduled)),
  h("td", { class: "num", "data-col": "in_flight" }, fmtNum(q.in_flight)),
  h("td", { class: "num", "data-col": "dead" }, q.dead_letters
    ? h("a", { href: `#/queues/${encodeURIComponent(q.name)}/dead` }, fmtNum(q.dead_letters)) : "0"),
  h("td", { class: "num" }, fmtNum(q.rates.submitted_per_s, 1)),
  h("td", { class: "num" }, fmtNum(q.rates.completed_per_s, 1)),
  h("td", { class: "num" }, fmtNum(q.rates.failed_per_s, 1)),
  h("td", { "data-col": "consumers" }, q.consumers.length
    ? q.consumers.map((c) => h("div", {}, h("code", {}, c.worker), ` ${c.in_flight}/${c.capacity}`))
    : h("span", { class: "muted" }, "none")),
  h("td", {}, isAdmin()
    ? h("button", { class: "danger", "data-action": "purge", "data-queue": q.name, disabled: q.waiting === 0, onclick: () => purgeQueue(q.name) }, "Purge")
    : null),
  ));
  render(main, 
    setTitle("Queues"),
    queues.length ? h("table", { id: "queues-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "queue"), h("th", { class: "num" }, "waiting"), h("th", { class: "num" }, "scheduled"),
        h("th", { class: "num" }, "in flight"), h("th", { class: "num" }, "dead letters"),
        h("th", { class: "num" }, "in / s"), h("th", { class: "num" }, "done / s"), h("th", { class: "num" }, "failed / s"),
        h("th", {}, "consumers (in flight / capacity)"), h("th", {}, ""))),
      h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No queues yet: publish a task to tasks/<queue>."),
  );
}

async function revokeTask(id) {
  if (!await confirmAction(`Revoke task ${id}? It will not run again; its requester gets a “revoked” result, and a worker running it is told to cancel.`)) return;
  try {
    await api(`/tasks/${encodeURIComponent(id)}/revoke`, { method: "POST" });
    toast(`Revoked ${id}`);
  } catch (e) {
    toast(`Revoke failed: ${e.message}`, true);
  }
  refresh();
}

async function retryTask(id) {
  if (!await confirmAction(`Run task ${id} again? It is queued anew under the same id; the result goes to its original reply topic.`)) return;
  try {
    await api(`/tasks/${encodeURIComponent(id)}/retry`, { method: "POST" });
    toast(`Queued ${id} again`);
  } catch (e) {
    toast(`Retry failed: ${e.message}`, true);
  }
  refresh();
}

async function pageQueue(main, name) {
  const q = await api(`/queues/${encodeURIComponent(name)}?limit=100`);
  render(main, 
    setTitle(`Queue ${q.name}`),
    q.warning ? h("p", { class: "warning" }, q.warning) : null,
    h("dl", { class: "fields" },
      h("dt", {}, "waiting"), h("dd", { "data-field": "waiting" }, fmtNum(q.waiting)),
      h("dt", {}, "scheduled"), h("dd", { "data-field": "scheduled" }, fmtNum(q.scheduled)),
      h("dt", {}, "in flight"), h("dd", {}, fmtNum(q.in_flight)),
      h("dt", {}, "dead letters"), h("dd", { "data-field": "dead" }, h("a", { href: `#/queues/${encodeURIComponent(q.name)}/dead` }, fmtNum(q.dead_letters))),
      h("dt", {}, "consumers"), h("dd", {}, q.consumers.map((c) => `${c.worker} (${c.in_flight}/${c.capacity})`).join(", ") || "none"),
      h("dt", {}, "limits"), h("dd", {}, `max length ${fmtNum(q.limits.max_length)}, lease ${fmtNum(q.limits.lease_timeout_ms)} ms, max attempts ${q.limits.max_attempts}, backoff ${fmtNum(q.limits.backoff_ms)}–${fmtNum(q.limits.backoff_max_ms)} ms${q.limits.jitter ? " with jitter" : ""}, max per worker ${q.limits.max_per_worker || "–"}, max in flight ${q.limits.max_in_flight || "–"}, rate ${q.limits.rate_limit || "–"}`),
    ),
    h("div", { class: "actions" },
      h("a", { href: `#/tasks?queue=${encodeURIComponent(q.name)}` }, "Search this queue's history"),
      isAdmin() ? h("button", { class: "danger", "data-action": "purge", "data-queue": q.name, disabled: q.waiting === 0, onclick: () => purgeQueue(q.name) }, "Purge") : null),
    h("h2", {}, `Next waiting (${fmtNum(q.next_waiting.length)} of ${fmtNum(q.waiting + q.scheduled)})`),
    h("table", { id: "waiting-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "task"), h("th", {}, "submitted"), h("th", { class: "num" }, "priority"), h("th", {}, "due"), h("th", { class: "num" }, "attempts"), h("th", {}, ""))),
      h("tbody", {}, q.next_waiting.map((t) => h("tr", { "data-task-id": t.id },
        h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(t.id)}` }, h("code", {}, t.id))),
        h("td", {}, t.task), h("td", {}, fmtTime(t.submitted_at_us)), h("td", { class: "num" }, t.priority),
        h("td", {}, t.due_at_us ? fmtTime(t.due_at_us) : "now"), h("td", { class: "num" }, t.attempts),
        h("td", {}, isAdmin() ? h("button", { "data-action": "revoke", onclick: () => revokeTask(t.id) }, "Revoke") : null))))),
  );
}

async function pageWorkers(main) {
  const { workers } = await api("/workers");
  render(main, 
    setTitle("Workers"),
    workers.length ? h("table", { id: "workers-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "client id"), h("th", {}, "state"), h("th", {}, "queues"), h("th", { class: "num" }, "capacity"),
        h("th", { class: "num" }, "in flight"), h("th", { class: "num" }, "completed"), h("th", { class: "num" }, "failed"),
        h("th", {}, "connected since"), h("th", {}, "last seen"))),
      h("tbody", {}, workers.map((w) => h("tr", { "data-worker": w.id },
        h("td", {}, h("a", { href: `#/tasks?worker=${encodeURIComponent(w.id)}` }, h("code", {}, w.id))),
        h("td", { "data-col": "state" }, badge(w.online ? "online" : "offline"),
          w.quarantined_until_us ? h("span", { title: "it keeps dropping its tasks: no new task until then", "data-quarantine": w.id }, " ", badge("quarantined"), ` until ${fmtTime(w.quarantined_until_us)}`) : null),
        h("td", {}, w.queues.join(", ")),
        h("td", { class: "num" }, w.capacity),
        h("td", { class: "num", "data-col": "in_flight" }, w.in_flight),
        h("td", { class: "num", "data-col": "completed" }, fmtNum(w.completed)),
        h("td", { class: "num" }, fmtNum(w.failed)),
        h("td", {}, fmtTime(w.connected_since_us)),
        h("td", {}, w.online ? "now" : fmtAgo(w.last_seen_us))))))
      : h("p", { class: "muted" }, "No workers yet: subscribe one to $share/<group>/tasks/<queue>."),
  );
}

const TASK_FILTERS = ["id", "queue", "task", "status", "worker", "requester", "since", "until"];
const STATUSES = ["", "scheduled", "queued", "running", "success", "failure", "expired", "revoked", "rejected"];

// datetime-local value <-> ms since the epoch (local time).
const toLocalInput = (ms) => { const d = new Date(Number(ms)); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); };
const fromLocalInput = (v) => String(new Date(v).getTime());

async function pageTasks(main, params) {
  const form = h("form", { class: "filters", id: "task-search" },
    ...TASK_FILTERS.map((f) => {
      let input;
      if (f === "status") input = h("select", { name: f }, STATUSES.map((s) => h("option", { value: s, selected: params.get(f) === s }, s || "any")));
      else if (f === "since" || f === "until") input = h("input", { name: f, type: "datetime-local", value: params.get(f) ? toLocalInput(params.get(f)) : null });
      else input = h("input", { name: f, value: params.get(f) || "", placeholder: f === "id" ? "exact task id" : "" });
      return h("label", {}, f, input);
    }),
    h("button", { class: "primary", type: "submit" }, "Search"),
    h("button", { type: "button", onclick: () => { location.hash = "#/tasks"; } }, "Clear"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const f of TASK_FILTERS) {
      const v = form.elements[f].value.trim();
      if (v) p.set(f, f === "since" || f === "until" ? fromLocalInput(v) : v);
    }
    location.hash = `#/tasks?${p}`;
  });
  const query = new URLSearchParams();
  for (const f of TASK_FILTERS) if (params.get(f)) query.set(f, params.get(f));
  if (params.get("cursor")) query.set("cursor", params.get("cursor"));
  let page;
  try {
    page = await api(`/tasks?${query}`);
  } catch (e) {
    render(main, setTitle("Tasks"), form, h("p", { class: "error", id: "tasks-error" }, e.message));
    return;
  }
  const trail = (params.get("trail") || "").split(",").filter(Boolean);
  const go = (cursor, newTrail) => {
    const p = new URLSearchParams(query);
    p.delete("cursor");
    if (cursor) p.set("cursor", cursor);
    if (newTrail.length) p.set("trail", newTrail.join(","));
    location.hash = `#/tasks?${p}`;
  };
  render(main, 
    setTitle("Tasks"),
    form,
    h("p", { class: "muted", id: "tasks-summary" },
      `${fmtNum(page.tasks.length)} shown · ${fmtNum(page.retained)} tasks in the history · ${fmtNum(page.scanned)} scanned in ${fmtNum(page.took_ms, 1)} ms`),
    h("table", { id: "tasks-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "queue"), h("th", {}, "task"), h("th", {}, "status"),
        h("th", {}, "worker"), h("th", { class: "num" }, "attempts"), h("th", {}, "submitted"), h("th", { class: "num" }, "run"))),
      h("tbody", {}, page.tasks.map((t) => h("tr", { class: "clickable", "data-task-id": t.id, onclick: () => { location.hash = `#/tasks/${encodeURIComponent(t.id)}`; } },
        h("td", {}, h("code", {}, t.id)), h("td", {}, t.queue), h("td", {}, t.task), h("td", { "data-col": "status" }, badge(t.status)),
        h("td", {}, t.worker || "–"), h("td", { class: "num" }, t.attempts), h("td", {}, fmtTime(t.submitted_at_us)),
        h("td", { class: "num" }, t.started_at_us && t.finished_at_us ? fmtMs((t.finished_at_us - t.started_at_us) / 1000) : "–"))))),
    page.tasks.length ? null : h("p", { class: "muted", id: "tasks-empty" }, "No task matches."),
    h("div", { class: "pager" },
      h("button", { id: "first-page", disabled: !params.get("cursor"), onclick: () => go(null, []) }, "First"),
      h("button", { id: "prev-page", disabled: !params.get("cursor"), onclick: () => { const t = trail.slice(0, -1); go(trail[trail.length - 1] === "-" ? null : trail[trail.length - 1], t); } }, "Previous"),
      h("button", { id: "next-page", disabled: !page.next_cursor, onclick: () => go(page.next_cursor, [...trail, params.get("cursor") || "-"]) }, "Next"),
    ),
  );
}

async function deadAction(queue, id, replay) {
  const what = id ? `dead letter ${id}` : `every dead letter of ${queue}`;
  const text = replay
    ? `Replay ${what}? It runs again with its id, arguments and reply topic, and a fresh attempt count.`
    : `Discard ${what}? It is deleted for good.`;
  if (!await confirmAction(text)) return;
  const base = `/queues/${encodeURIComponent(queue)}/dead`;
  const path = id ? `${base}/${encodeURIComponent(id)}${replay ? "/replay" : ""}` : `${base}${replay ? "/replay" : ""}`;
  try {
    const r = await api(path, { method: replay ? "POST" : "DELETE" });
    toast(id ? `${replay ? "Replayed" : "Discarded"} ${id}` : `${replay ? "Replayed" : "Discarded"} ${r.replayed ?? r.discarded} dead letter(s)`);
  } catch (e) {
    toast(`${replay ? "Replay" : "Discard"} failed: ${e.message}`, true);
  }
  refresh();
}

async function pageDead(main, name, params) {
  const cursor = params.get("cursor");
  const page = await api(`/queues/${encodeURIComponent(name)}/dead?limit=50${cursor ? `&cursor=${cursor}` : ""}`);
  render(main,
    setTitle(`Dead letters of ${name}`),
    h("p", { class: "muted" }, `Tasks whose attempts were used up: ${fmtNum(page.total)}. Replay runs one again with a fresh attempt count; its result goes to its original reply topic.`),
    h("div", { class: "actions" },
      h("a", { href: `#/queues/${encodeURIComponent(name)}` }, `Back to queue ${name}`),
      isAdmin() ? h("button", { class: "primary", "data-action": "replay-all", disabled: page.total === 0, onclick: () => deadAction(name, null, true) }, "Replay all") : null,
      isAdmin() ? h("button", { class: "danger", "data-action": "discard-all", disabled: page.total === 0, onclick: () => deadAction(name, null, false) }, "Discard all") : null),
    page.dead_letters.length ? h("table", { id: "dead-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "task"), h("th", {}, "failed"), h("th", { class: "num" }, "attempts"), h("th", {}, "last error"), h("th", {}, ""))),
      h("tbody", {}, page.dead_letters.map((l) => h("tr", { "data-task-id": l.id },
        h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(l.id)}` }, h("code", {}, l.id))),
        h("td", {}, l.task), h("td", {}, fmtTime(l.failed_at_us)), h("td", { class: "num" }, l.attempts),
        h("td", {}, h("code", {}, l.error)),
        h("td", {}, isAdmin() ? [
          h("button", { "data-action": "replay", onclick: () => deadAction(name, l.id, true) }, "Replay"),
          h("button", { class: "danger", "data-action": "discard", onclick: () => deadAction(name, l.id, false) }, "Discard")] : null)))))
      : h("p", { class: "muted", id: "dead-empty" }, "No dead letters."),
    page.next_cursor ? h("a", { href: `#/queues/${encodeURIComponent(name)}/dead?cursor=${page.next_cursor}` }, "Older") : null,
  );
}

async function removeSchedule(name) {
  if (!await confirmAction(`Remove schedule “${name}”? It stops firing; firings already queued stay queued.`)) return;
  try {
    await api(`/schedules/${encodeURIComponent(name)}`, { method: "DELETE" });
    toast(`Removed schedule ${name}`);
  } catch (e) {
    toast(`Remove failed: ${e.message}`, true);
  }
  refresh();
}

async function pageSchedules(main) {
  const { schedules } = await api("/schedules");
  render(main,
    setTitle("Schedules"),
    h("p", { class: "muted" }, "Each firing is a task with the id <name>@<due time>, so it runs once; after downtime only the latest missed firing runs. Declare schedules in [[schedules]] or POST /api/v1/schedules."),
    schedules.length ? h("table", { id: "schedules-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "queue / task"), h("th", {}, "when"),
        h("th", {}, "next due"), h("th", {}, "last firing"), h("th", {}, "from"), h("th", {}, ""))),
      h("tbody", {}, schedules.map((s) => h("tr", { "data-schedule": s.name },
        h("td", {}, h("strong", {}, s.name)),
        h("td", {}, h("a", { href: `#/queues/${encodeURIComponent(s.queue)}` }, s.queue), ` / ${s.task}`),
        h("td", { "data-col": "when" }, s.every ? `every ${s.every}` : h("code", {}, `${s.cron} (${s.timezone})`)),
        h("td", { "data-col": "next" }, fmtTime(s.next_due_us)),
        h("td", { "data-col": "last" }, s.last_firing_id ? h("a", { href: `#/tasks/${encodeURIComponent(s.last_firing_id)}` }, h("code", {}, s.last_firing_id)) : "–"),
        h("td", {}, s.source),
        h("td", {}, isAdmin() && s.source === "api" ? h("button", { class: "danger", "data-action": "remove-schedule", onclick: () => removeSchedule(s.name) }, "Remove") : null)))))
      : h("p", { class: "muted", id: "schedules-empty" }, "No schedules."),
  );
}

async function identityAction(name, action) {
  const question = action === "revoke"
    ? `Revoke “${name}”? It can no longer connect, and its connections close within a second.`
    : `Give “${name}” a new token? The old one stops working and its connections close.`;
  if (!await confirmAction(question)) return;
  try {
    const r = await api(`/identities/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    toast(action === "revoke" ? `Revoked ${name}` : `New token for ${name}`);
    await refresh();
    if (r.token) showToken(name, r.token);
  } catch (e) {
    toast(`${action} failed: ${e.message}`, true);
  }
}

// A new token is shown once, here, and nowhere else.
function showToken(name, token) {
  const box = $("#new-token-box");
  if (!box) return;
  render(box, h("div", { class: "banner", id: "new-token" },
    `Token of ${name}, shown only now (the broker keeps a hash): `, h("code", { id: "new-token-value" }, token)));
}

async function pageDevices(main) {
  let ids = null, forbidden = false;
  try {
    ids = await api("/identities");
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) forbidden = true; else throw e;
  }
  const d = await api("/access/denials");
  const form = isAdmin() ? h("form", { class: "filters", id: "identity-form" },
    h("label", {}, "name", h("input", { name: "name", required: true, placeholder: "dev1" })),
    h("label", {}, "role", h("select", { name: "role" }, ["device", "worker", "app", "admin"].map((r) => h("option", { value: r }, r)))),
    h("label", {}, "queues", h("input", { name: "queues", placeholder: "all; or mapper, img*" })),
    h("button", { class: "primary", type: "submit" }, "Add identity")) : null;
  if (form) form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const queues = form.elements.queues.value.split(",").map((q) => q.trim()).filter(Boolean);
    const name = form.elements.name.value.trim();
    try {
      const r = await api("/identities", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, role: form.elements.role.value, queues }) });
      toast(`Added ${name}`);
      await refresh();
      showToken(name, r.token);
    } catch (e) {
      toast(`Add failed: ${e.message}`, true);
    }
  });
  const profile = d.profile === "development"
    ? h("p", { class: "banner", id: "profile" }, "Development profile: no identity exists, so any MQTT client may connect and use every topic. Add an identity to turn authentication on.")
    : h("p", { class: "muted", id: "profile" }, "Authentication is on: every MQTT client connects as an identity.");
  render(main,
    setTitle("Devices"),
    profile,
    form,
    h("div", { id: "new-token-box" }),
    forbidden ? h("p", { class: "muted" }, "Only admins see the identities.") : null,
    ids && ids.identities.length ? h("table", { id: "identities-table" },
      h("thead", {}, h("tr", {}, ["name", "role", "queues", "from", "status", "created", "last seen", "live", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, ids.identities.map((i) => h("tr", { "data-identity": i.name },
        h("td", {}, h("strong", {}, i.name)),
        h("td", {}, i.role),
        h("td", {}, i.queues.length ? i.queues.join(", ") : "all"),
        h("td", {}, i.origin),
        h("td", { "data-col": "status" }, badge(i.status)),
        h("td", {}, fmtTime(i.created_at_us)),
        h("td", {}, fmtAgo(i.last_seen_us)),
        h("td", { class: "num", "data-col": "live" }, i.live_connections),
        h("td", {}, isAdmin() && i.origin === "registry" && i.status === "active" ? [
          h("button", { "data-action": "rotate", onclick: () => identityAction(i.name, "rotate") }, "Rotate"),
          h("button", { class: "danger", "data-action": "revoke-identity", onclick: () => identityAction(i.name, "revoke") }, "Revoke")] : null)))))
      : ids ? h("p", { class: "muted", id: "identities-empty" }, "No identities.") : null,
    h("h2", {}, `Recent denials (${fmtNum(d.denied_publish)} publish, ${fmtNum(d.denied_subscribe)} subscribe, ${fmtNum(d.denied_other)} other, ${fmtNum(d.auth_failures)} refused connections since start)`),
    d.denials.length ? h("table", { id: "denials-table" },
      h("thead", {}, h("tr", {}, ["when", "action", "identity", "client id", "address", "topic", "reason"].map((c) => h("th", {}, c)))),
      h("tbody", {}, d.denials.map((x) => h("tr", {},
        h("td", {}, fmtTime(x.at_us)), h("td", {}, x.action), h("td", {}, x.identity || "–"),
        h("td", {}, h("code", {}, x.client_id)), h("td", {}, x.addr || "–"),
        h("td", {}, x.topic ? h("code", {}, x.topic) : "–"), h("td", {}, x.reason)))))
      : h("p", { class: "muted", id: "denials-empty" }, "No denials."),
  );
}

async function pageTask(main, id) {
  let t;
  try {
    t = await api(`/tasks/${encodeURIComponent(id)}`);
  } catch (e) {
    render(main, setTitle("Task"), h("p", { class: "error", id: "task-error" }, e.message));
    return;
  }
  const json = (v) => h("pre", {}, JSON.stringify(v, null, 2));
  const field = (name, value, key) => [h("dt", {}, name), h("dd", { "data-field": key || name }, value)];
  render(main, 
    setTitle(`Task ${t.id}`),
    h("div", { class: "actions" },
      isAdmin() && ["scheduled", "queued", "running"].includes(t.status) ? h("button", { class: "danger", "data-action": "revoke", onclick: () => revokeTask(t.id) }, "Revoke") : null,
      isAdmin() && ["failure", "expired", "revoked"].includes(t.status) ? h("button", { class: "primary", "data-action": "retry", onclick: () => retryTask(t.id) }, "Retry") : null,
    ),
    h("dl", { class: "fields", id: "task-detail" },
      field("id", h("code", {}, t.id)),
      field("status", badge(t.status)),
      field("queue", h("a", { href: `#/queues/${encodeURIComponent(t.queue)}` }, t.queue)),
      field("task", t.task),
      field("worker", t.worker || "–"),
      field("requester", t.requester || "–"),
      t.workflow ? field("workflow", h("a", { href: `#/workflows/${encodeURIComponent(t.workflow)}`, id: "task-workflow" }, t.workflow), "workflow") : null,
      field("attempts", t.attempts),
      t.lost_deliveries ? field("lost deliveries", `${t.lost_deliveries} (to a flapping worker, not counted as attempts)`, "lost_deliveries") : null,
      field("priority", t.priority ?? 0),
      t.due_at_us && t.status === "scheduled" ? field("due", fmtTime(t.due_at_us), "due") : null,
      t.retry ? field("retry policy", `${t.retry.max_attempts} attempts, backoff ${t.retry.backoff_ms}–${t.retry.backoff_max_ms} ms${t.retry.jitter ? " with jitter" : ""}`, "retry") : null,
      field("submitted", fmtTime(t.submitted_at_us), "submitted"),
      field("started", fmtTime(t.started_at_us), "started"),
      field("finished", fmtTime(t.finished_at_us), "finished"),
      field("queued", fmtMs(t.queued_ms), "queued_ms"),
      field("run", fmtMs(t.run_ms), "run_ms"),
      field("reply topic", t.reply_topic ? h("code", {}, t.reply_topic) : "none (result kept here only)", "reply_topic"),
      t.correlation_id ? field("correlation id", t.correlation_id, "correlation_id") : null,
      t.correlation_data ? field("correlation data", t.correlation_data, "correlation_data") : null,
      t.expires_at_us ? field("expires", fmtTime(t.expires_at_us), "expires") : null,
    ),
    h("h2", {}, "Envelope"),
    json({ task: t.task, ...(t.chunk ? { chunk: t.chunk } : { args: t.args }), kwargs: t.kwargs, ...(t.user_properties && t.user_properties.length ? { user_properties: t.user_properties } : {}) }),
    t.progress !== undefined ? [h("h2", {}, "Latest progress"), h("div", { id: "task-progress" }, json(t.progress))] : null,
    t.status === "success" ? [h("h2", {}, "Result"), h("div", { id: "task-result" }, json(t.result))] : null,
    t.error ? [h("h2", {}, ["scheduled", "queued", "running"].includes(t.status) ? "Last attempt" : "Error"), h("pre", { id: "task-error-text" }, t.error)] : null,
  );
}

// ---------- workflows ----------

function workflowRow(w) {
  const done = (w.counts && w.counts.success) || 0;
  return h("tr", { class: "clickable", "data-workflow": w.id, onclick: () => { location.hash = `#/workflows/${encodeURIComponent(w.id)}`; } },
    h("td", {}, h("code", {}, w.id)),
    h("td", {}, badge(w.status)),
    h("td", {}, w.kind),
    h("td", { class: "num", "data-col": "members" }, `${fmtNum(done)} / ${fmtNum(w.members)}`),
    h("td", {}, w.requester || "–"),
    h("td", {}, fmtTime(w.submitted_at_us)),
    h("td", {}, w.finished_at_us ? fmtMs((w.finished_at_us - w.submitted_at_us) / 1000) : "running"),
  );
}

async function pageWorkflows(main) {
  const { running, recent } = await api("/workflows");
  const table = (id, list, empty) => list.length
    ? h("table", { id },
      h("thead", {}, h("tr", {}, h("th", {}, "workflow"), h("th", {}, "status"), h("th", {}, "root"),
        h("th", { class: "num" }, "members done"), h("th", {}, "requester"), h("th", {}, "submitted"), h("th", {}, "took"))),
      h("tbody", {}, list.map(workflowRow)))
    : h("p", { class: "muted" }, empty);
  render(main,
    setTitle("Workflows"),
    h("h2", {}, "Running"),
    table("workflows-running", running, "None running. Publish {\"workflow\": …} to swarmq/workflows."),
    h("h2", {}, "Recently finished"),
    table("workflows-recent", recent, "None yet."),
  );
}

async function revokeWorkflow(id) {
  if (!await confirmAction(`Revoke workflow ${id}? Its members are revoked (running ones are told to cancel) and its requester gets a “revoked” result.`)) return;
  try {
    await api(`/workflows/${encodeURIComponent(id)}/revoke`, { method: "POST" });
    toast(`Revoked ${id}`);
  } catch (e) {
    toast(`Revoke failed: ${e.message}`, true);
  }
  refresh();
}

// One node of a workflow's tree: kind, path, status; members link to their task.
function treeNode(n) {
  const label = n.id
    ? h("a", { href: `#/tasks/${encodeURIComponent(n.id)}`, "data-member": n.id }, h("code", {}, n.path), ` ${n.task}`)
    : h("span", {}, h("strong", {}, n.kind), n.path ? h("code", {}, ` ${n.path}`) : null);
  return h("li", { "data-path": n.path, "data-status": n.status },
    label, " ", badge(n.status), n.id ? h("span", { class: "muted" }, ` ${n.kind === "chunk" ? "chunk on" : "on"} ${n.queue}`) : null,
    n.children && n.children.length
      ? h("ul", {}, n.children.map(treeNode), n.more ? h("li", { class: "muted" }, `… and ${fmtNum(n.more)} more`) : null)
      : null);
}

async function pageWorkflow(main, id) {
  let w;
  try {
    w = await api(`/workflows/${encodeURIComponent(id)}`);
  } catch (e) {
    render(main, setTitle("Workflow"), h("p", { class: "error", id: "workflow-error" }, e.message));
    return;
  }
  const field = (name, value, key) => [h("dt", {}, name), h("dd", { "data-field": key || name }, value)];
  const counts = Object.entries(w.counts || {}).map(([k, v]) => h("span", { class: "count", "data-count": k }, badge(k), ` ${fmtNum(v)} `));
  render(main,
    setTitle(`Workflow ${w.id}`),
    h("div", { class: "actions" },
      isAdmin() && w.status === "running" ? h("button", { class: "danger", "data-action": "revoke-workflow", onclick: () => revokeWorkflow(w.id) }, "Revoke") : null),
    h("dl", { class: "fields", id: "workflow-detail" },
      field("id", h("code", {}, w.id)),
      field("status", badge(w.status)),
      field("members", fmtNum(w.members)),
      field("by status", counts, "counts"),
      field("requester", w.requester || "–"),
      field("submitted", fmtTime(w.submitted_at_us), "submitted"),
      field("finished", fmtTime(w.finished_at_us), "finished"),
      field("took", w.finished_at_us ? fmtMs((w.finished_at_us - w.submitted_at_us) / 1000) : "running", "took"),
    ),
    w.status === "success" ? [h("h2", {}, "Result"), h("pre", { id: "workflow-result", class: "wrap" }, JSON.stringify(w.result))] : null,
    w.error ? [h("h2", {}, "Error"), h("pre", { id: "workflow-error-text" }, w.error)] : null,
    h("h2", {}, "Tree"),
    h("ul", { class: "tree", id: "workflow-tree" }, treeNode(w.tree)),
  );
}

// ---------- routing, login, live updates ----------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(qs || "");
  const main = $("#main");
  let name = "overview", fn = () => pageOverview(main);
  if (parts[0] === "queues" && parts[1] && parts[2] === "dead") { name = "queues"; fn = () => pageDead(main, parts[1], params); }
  else if (parts[0] === "queues" && parts[1]) { name = "queues"; fn = () => pageQueue(main, parts[1]); }
  else if (parts[0] === "queues") { name = "queues"; fn = () => pageQueues(main); }
  else if (parts[0] === "workers") { name = "workers"; fn = () => pageWorkers(main); }
  else if (parts[0] === "tasks" && parts[1]) { name = "task"; fn = () => pageTask(main, parts[1]); }
  else if (parts[0] === "tasks") { name = "tasks"; fn = () => pageTasks(main, params); }
  else if (parts[0] === "workflows" && parts[1]) { name = "workflow"; fn = () => pageWorkflow(main, parts[1]); }
  else if (parts[0] === "workflows") { name = "workflows"; fn = () => pageWorkflows(main); }
  else if (parts[0] === "schedules") { name = "schedules"; fn = () => pageSchedules(main); }
  else if (parts[0] === "devices") { name = "devices"; fn = () => pageDevices(main); }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === ({ task: "tasks", workflow: "workflows" }[name] || name));
  state.page = { name, fn };
  return refresh();
}

let refreshing = false;
async function refresh() {
  if (!state.page || refreshing) return;
  refreshing = true;
  try {
    await state.page.fn();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) $("#main").replaceChildren(h("p", { class: "error" }, `Error: ${e.message}`));
  } finally {
    refreshing = false;
  }
}

function connectEvents() {
  if (state.events) state.events.close();
  const live = $("#live");
  const es = new EventSource(`${API}/events`);
  state.events = es;
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live off"; });
  es.addEventListener("tick", (ev) => {
    const ov = JSON.parse(ev.data);
    state.overview = ov;
    const banner = $("#store-banner");
    banner.hidden = !ov.store_error;
    banner.textContent = ov.store_error
      ? `The queue store cannot write (${ov.store_error}): submissions are refused until it can; writes resume by themselves once space is back. Nothing acknowledged is lost.`
      : "";
    if (ov.now && (!state.series.length || state.series[state.series.length - 1].t_ms < ov.now.t_ms)) {
      state.series.push(ov.now);
      const cut = Date.now() - WINDOW_MS - 60000;
      while (state.series.length && state.series[0].t_ms < cut) state.series.shift();
    }
    // Pages that show live state follow every tick; the task search and a
    // task page refresh on demand, so a reader is not interrupted.
    if (state.page && ["overview", "queues", "workers", "workflows", "workflow"].includes(state.page.name)) refresh();
  });
}

function showLogin(message) {
  if (state.events) { state.events.close(); state.events = null; }
  $("#who").replaceChildren();
  const err = h("p", { class: "error", id: "login-error" }, message || "");
  const form = h("form", { class: "login", id: "login-form" },
    h("h1", {}, "Log in to swarmq"),
    h("label", {}, "User", h("input", { name: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { class: "primary", type: "submit" }, "Log in"),
    err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: form.elements.username.value, password: form.elements.password.value }) });
      start();
    } catch (e) {
      err.textContent = e.message;
    }
  });
  $("#main").replaceChildren(form);
  state.page = null;
}

async function start() {
  try {
    state.me = await api("/me");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) $("#main").replaceChildren(h("p", { class: "error" }, `Cannot reach the API: ${e.message}`));
    return;
  }
  $("#open-banner").hidden = !state.me.open;
  $("#who").replaceChildren(state.me.open
    ? h("span", { id: "role" }, "open access (admin)")
    : h("span", {}, h("span", { id: "role" }, `${state.me.user} (${state.me.role})`),
      h("button", { id: "logout", onclick: async () => { await api("/logout", { method: "POST" }); showLogin("Logged out."); } }, "Log out")));
  connectEvents();
  route();
}

window.addEventListener("hashchange", () => { if (state.me) route(); });
window.addEventListener("DOMContentLoaded", start);
