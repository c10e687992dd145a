// tasktape's dashboard: a task list with live progress, a task's detail
// following its tape over SSE, a submit form built from the ops' params
// schemas, an activity chart, and the remote workers. It reads only the public HTTP API (the
// same one curl, the CLI and dikw-core's client use); with a token it sends
// `Authorization: Bearer` on every call, streams included (fetch, not
// EventSource), and keeps the token in sessionStorage, never in a URL.

const STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"];
const PAGE = 50;
const LIST_EVERY_MS = 1500;
const PROGRESS_EVERY_MS = 1000;
const TIMELINE_MAX = 2000;
const STATS_EVERY_MS = 5000;

const main = document.getElementById("main");
const conn = document.getElementById("conn");
let view = null; // the current page's teardown

// ---------------------------------------------------------------- the API

class HttpError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.detail = error.detail;
  }
}

function token() {
  return sessionStorage.getItem("tasktape.token");
}

function headers(extra = {}) {
  const result = { ...extra };
  const value = token();
  if (value) result.Authorization = `Bearer ${value}`;
  return result;
}

let askingToken = null;

// Asks for a token (once at a time); resolves when one was entered.
function askToken(message) {
  if (askingToken) return askingToken;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-message").textContent = message;
  input.value = "";
  // The token is needed: Esc must not close the prompt and strand the page.
  dialog.oncancel = (event) => event.preventDefault();
  askingToken = new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      if (!input.value) return;
      if (!/^[\x21-\x7e]+$/.test(input.value)) {
        document.getElementById("token-message").textContent =
          "A token is printable ASCII without spaces; check for a pasted quote or space.";
        return;
      }
      sessionStorage.setItem("tasktape.token", input.value);
      dialog.close();
      askingToken = null;
      resolve();
    };
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return askingToken;
}

async function api(path, options = {}) {
  for (;;) {
    const response = await fetch(path, {
      ...options,
      headers: headers(options.body ? { "Content-Type": "application/json" } : {}),
    });
    if (response.status === 401) {
      const had = token();
      sessionStorage.removeItem("tasktape.token");
      await askToken(had
        ? "That token was refused by the server (401). Enter the right one."
        : "This server needs a token. Enter the bearer token it was started with; it is kept in this tab only.");
      continue;
    }
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (!response.ok) throw new HttpError(response.status, body);
    conn.textContent = "";
    return body;
  }
}

// ---------------------------------------------------------------- helpers

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function shortId(id) {
  // UUIDv7 ids start with a timestamp shared by tasks created together:
  // the tail is what tells them apart.
  return "…" + id.replace(/-/g, "").slice(-10);
}

function when(ts) {
  if (!ts) return "";
  const date = new Date(ts);
  return date.toLocaleString(undefined, { hour12: false });
}

function took(from, to) {
  if (!from) return "";
  const end = to ? new Date(to) : new Date();
  const ms = end - new Date(from);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  const seconds = Math.floor((ms % 60000) / 1000);
  return minutes < 60 ? `${minutes}m ${String(seconds).padStart(2, "0")}s`
    : `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status);
}

function progressBar(progress) {
  if (!progress) return h("span", { class: "bar-label" }, "");
  const { phase, current, total } = progress;
  // A <progress> without a value is the indeterminate bar (total unknown).
  const bar = total
    ? h("progress", { max: total, value: Math.min(current, total), "aria-label": `${phase}: ${current} of ${total}` })
    : h("progress", { "aria-label": `${phase}: ${current}, total unknown` });
  return h("div", { class: "progress", "data-progress": `${current}/${total}` },
    bar, h("div", { class: "bar-label" }, total ? `${phase} ${current}/${total}` : `${phase} ${current}`));
}

function showError(error, where = main) {
  const message = error instanceof HttpError ? `${error.message} (${error.status} ${error.code})` : String(error.message || error);
  where.replaceChildren(h("div", { class: "notice", role: "alert" }, message));
}

// ---------------------------------------------------------------- routing

function route() {
  if (view) view();
  view = null;
  const path = location.pathname;
  const match = path.match(/^\/tasks\/([^/]+)$/);
  if (match) view = detailPage(decodeURIComponent(match[1]));
  else if (path === "/submit") view = submitPage();
  else if (path === "/workers") view = workersPage();
  else view = listPage();
  main.focus({ preventScroll: true });
}

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});
window.addEventListener("popstate", route);

// A loop calling `body` every `ms` until stopped; errors show in the header.
function every(ms, body) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await body();
    } catch (error) {
      if (!stopped) conn.textContent = `connection problem: ${error.message || error}`;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------- the list

// Latest `progress` event of running tasks, polled from their tapes.
class ProgressTracker {
  constructor() {
    this.next = new Map(); // task id → next seq to read
    this.latest = new Map(); // task id → {phase, current, total}
  }

  async refresh(ids) {
    for (const id of [...this.next.keys()]) {
      if (!ids.includes(id)) {
        this.next.delete(id);
        this.latest.delete(id);
      }
    }
    await Promise.all(ids.map(async (id) => {
      let from = this.next.get(id);
      if (from === undefined) {
        // Start near the end: a long tape is not read from its start.
        const head = await api(`/v1/tasks/${id}/events?from_seq=0&limit=1`);
        from = Math.max(1, head.last_seq - 200);
      }
      let page = await api(`/v1/tasks/${id}/events?from_seq=${from}&limit=1000`);
      if (page.has_more) {
        // Far behind (a chatty task): read only the tape's tail.
        page = await api(`/v1/tasks/${id}/events?from_seq=${Math.max(1, page.last_seq - 200)}&limit=1000`);
      }
      for (const event of page.events) {
        if (event.type === "progress") this.latest.set(id, event);
      }
      this.next.set(id, page.next_from_seq);
    }));
  }
}

function listPage() {
  const params = new URLSearchParams(location.search);
  const state = {
    status: params.get("status") || "",
    op: params.get("op") || "",
    // Metadata filters, `?meta.KEY=VALUE` (every one must hold).
    meta: [...params.entries()].filter(([name]) => name.startsWith("meta.")).map(([name, value]) => [name.slice(5), value]),
    cursors: [null],
  };
  const counts = h("div", { class: "counts", id: "counts", "aria-label": "Tasks per status" });
  const chart = h("div", { class: "card chart", id: "chart" }, h("p", { class: "muted" }, "Loading activity…"));
  const statusSelect = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s)));
  const opSelect = h("select", { id: "filter-op", name: "op" }, h("option", { value: "" }, "any"));
  const findInput = h("input", { id: "find-id", placeholder: "task id", size: 38 });
  const metaInput = h("input", { id: "filter-meta", placeholder: "customer=42, region=eu", size: 24,
    value: state.meta.map(([key, value]) => `${key}=${value}`).join(", "),
    title: "Only tasks whose metadata holds every KEY=VALUE given (comma-separated)" });
  const rows = h("tbody", { id: "task-rows" });
  // The filtered op's flow control and its rate's state (GET /v1/ops).
  const flowBox = h("p", { class: "muted", id: "flow-state", "aria-live": "polite" });
  const pageLabel = h("span", { class: "muted", id: "page-label" });
  // Select-and-act: the checked rows of this page, cancelled or retried
  // with one bulk request (POST /v1/tasks/cancel | retry with their ids).
  const selected = new Set();
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every task on this page" });
  const selectedLabel = h("span", { class: "muted", id: "selected-count" });
  const cancelSelected = h("button", { class: "danger", type: "button", id: "cancel-selected", disabled: true }, "Cancel selected");
  const retrySelected = h("button", { class: "secondary", type: "button", id: "retry-selected", disabled: true }, "Retry selected");
  const bulkBox = h("span", { id: "bulk-box" });
  const bulkResult = h("span", { id: "bulk-result", role: "status", "aria-live": "polite" });
  const prev = h("button", { class: "secondary", id: "page-prev", type: "button" }, "Newer");
  const next = h("button", { class: "secondary", id: "page-next", type: "button" }, "Older");
  main.replaceChildren(
    h("h1", {}, "Tasks"),
    counts,
    chart,
    h("form", { class: "filters", onsubmit: (event) => { event.preventDefault(); const id = findInput.value.trim(); if (id) go(`/tasks/${encodeURIComponent(id)}`); } },
      h("label", {}, "Status", statusSelect),
      h("label", {}, "Op", opSelect),
      h("label", {}, "Metadata", metaInput),
      h("label", {}, "Find by id", findInput),
      h("button", { type: "submit", class: "secondary" }, "Open")),
    flowBox,
    h("div", { class: "bulk", "aria-label": "Act on the selected tasks" },
      selectedLabel, cancelSelected, retrySelected, bulkBox, bulkResult),
    h("div", { class: "table-wrap" },
      h("table", { "aria-label": "Tasks, newest first" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, selectAll),
          h("th", { scope: "col" }, "Id"), h("th", { scope: "col" }, "Op"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Progress"), h("th", { scope: "col", class: "hide-narrow" }, "Created"),
          h("th", { scope: "col" }, "Duration"))),
        rows)),
    h("div", { class: "pager" }, prev, next, pageLabel));

  const tracker = new ProgressTracker();
  let page = null;

  // Rows are kept by task id and only their cells change, so focus and
  // selection survive the refreshes.
  const rowFor = new Map();
  const makeRow = (task) => {
    const cells = {
      status: h("td", {}),
      progress: h("td", {}),
      duration: h("td", {}),
    };
    const check = h("input", { type: "checkbox", class: "select", "aria-label": `select task ${task.task_id}`,
      checked: selected.has(task.task_id) });
    check.addEventListener("change", () => {
      if (check.checked) selected.add(task.task_id);
      else selected.delete(task.task_id);
      drawSelection();
    });
    const tr = h("tr", { "data-task": task.task_id },
      h("td", {}, check),
      h("td", { class: "id" },
        h("a", { href: `/tasks/${task.task_id}`, "data-link": true, title: task.task_id, "aria-label": `task ${task.task_id}` }, shortId(task.task_id)),
        " ",
        h("button", { class: "secondary small", type: "button", title: "Copy the full id", "aria-label": `copy id ${task.task_id}`,
          onclick: () => copy(task.task_id) }, "copy")),
      h("td", {}, task.op, metaChips(task.metadata, (key, value) => {
        metaInput.value = `${key}=${value}`;
        changed();
      })),
      cells.status,
      cells.progress,
      h("td", { class: "hide-narrow" }, when(task.created_at)),
      cells.duration);
    return { tr, cells, shown: {}, check };
  };
  const drawSelection = () => {
    for (const id of [...selected]) if (!rowFor.has(id)) selected.delete(id);
    const count = selected.size;
    selectedLabel.textContent = count ? `${count} selected` : "select tasks to cancel or retry them";
    cancelSelected.disabled = count === 0;
    retrySelected.disabled = count === 0;
    selectAll.checked = count > 0 && count === rowFor.size;
    for (const [id, row] of rowFor) row.check.checked = selected.has(id);
  };
  const bulk = (action) => {
    const ids = [...selected];
    const yes = h("button", { class: action === "cancel" ? "danger" : "", type: "button", id: "bulk-yes" },
      action === "cancel" ? `Yes, cancel ${ids.length}` : `Yes, retry ${ids.length}`);
    const no = h("button", { class: "secondary", type: "button", id: "bulk-no" }, "No");
    bulkBox.replaceChildren(h("span", { class: "confirm", role: "alertdialog", "aria-label": "Confirm" },
      action === "cancel"
        ? `Cancel ${ids.length} task(s)? Pending ones end now, running ones are asked to stop.`
        : `Retry ${ids.length} task(s)? Each finished one runs again as a new task.`, yes, no));
    yes.focus();
    no.addEventListener("click", () => bulkBox.replaceChildren());
    yes.addEventListener("click", async () => {
      bulkBox.replaceChildren();
      try {
        const answer = await api(`/v1/tasks/${action}`, { method: "POST", body: JSON.stringify({ ids }) });
        bulkResult.textContent = action === "cancel"
          ? `Cancelled ${answer.cancelled} of ${answer.matched} (the others had already ended).`
          : `Retried ${answer.retried} of ${answer.matched} as new tasks (unfinished ones are left alone).`;
        selected.clear();
        drawSelection();
        await load();
      } catch (error) {
        bulkResult.replaceChildren(h("span", { class: "error", role: "alert" }, error.message));
      }
    });
  };
  cancelSelected.addEventListener("click", () => bulk("cancel"));
  retrySelected.addEventListener("click", () => bulk("retry"));
  selectAll.addEventListener("change", () => {
    if (selectAll.checked) for (const id of rowFor.keys()) selected.add(id);
    else selected.clear();
    drawSelection();
  });
  const setCell = (row, name, key, make) => {
    if (row.shown[name] === key) return;
    row.shown[name] = key;
    row.cells[name].replaceChildren(make());
  };
  const draw = () => {
    if (!page) return;
    const wanted = new Set(page.tasks.map((task) => task.task_id));
    for (const [id, row] of rowFor) {
      if (!wanted.has(id)) {
        row.tr.remove();
        rowFor.delete(id);
      }
    }
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    let previous = null;
    for (const task of page.tasks) {
      let row = rowFor.get(task.task_id);
      if (!row) {
        row = makeRow(task);
        rowFor.set(task.task_id, row);
      }
      setCell(row, "status", task.status, () => badge(task.status));
      const progress = task.status === "running" ? tracker.latest.get(task.task_id) : null;
      const progressKey = progress ? `${progress.phase} ${progress.current}/${progress.total}` : task.status;
      setCell(row, "progress", progressKey, () => (progress || task.status === "running" ? progressBar(progress) : ""));
      const duration = took(task.started_at, task.finished_at);
      setCell(row, "duration", duration, () => duration);
      // Keep the page's order (newest first) without moving rows that are in place.
      const expected = previous ? previous.nextSibling : rows.firstChild;
      if (expected !== row.tr) rows.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    if (!page.tasks.length) {
      rowFor.clear();
      rows.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 7, class: "muted" }, "No tasks.")));
    }
    drawSelection();
    const number = state.cursors.length;
    pageLabel.textContent = `page ${number}`;
    prev.disabled = number === 1;
    next.disabled = !page.has_more;
  };

  const load = async () => {
    const query = new URLSearchParams({ limit: PAGE });
    if (state.status) query.set("status", state.status);
    if (state.op) query.set("op", state.op);
    for (const [key, value] of state.meta) query.set(`meta.${key}`, value);
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) query.set("cursor", cursor);
    page = await api(`/v1/tasks?${query}`);
    draw();
    const running = page.tasks.filter((task) => task.status === "running").map((task) => task.task_id);
    await tracker.refresh(running.slice(0, 25));
    draw();
  };

  const loadFlow = async () => {
    if (!state.op) { flowBox.replaceChildren(); return; }
    const ops = await api("/v1/ops");
    const op = ops.ops.find((candidate) => candidate.name === state.op);
    flowBox.replaceChildren(op && op.flow ? flowText(op.flow) : "");
  };
  const loadStats = async () => {
    loadFlow().catch(() => {});
    const stats = await api("/v1/stats?window=3600");
    counts.replaceChildren(...STATUSES.map((status) => h("div", { class: "count", "data-count": status },
      h("span", {}, badge(status)), h("b", {}, stats.counts[status] ?? 0))));
    chart.replaceChildren(activityChart(stats));
  };

  const changed = () => {
    state.status = statusSelect.value;
    state.op = opSelect.value;
    state.meta = metaInput.value.split(",").map((part) => part.trim()).filter(Boolean)
      .map((part) => { const at = part.indexOf("="); return at < 0 ? [part, ""] : [part.slice(0, at).trim(), part.slice(at + 1).trim()]; });
    state.cursors = [null];
    const query = new URLSearchParams();
    if (state.status) query.set("status", state.status);
    if (state.op) query.set("op", state.op);
    for (const [key, value] of state.meta) query.set(`meta.${key}`, value);
    history.replaceState(null, "", query.toString() ? `/?${query}` : "/");
    load().catch((error) => showError(error, rows));
    loadFlow().catch(() => {});
  };
  statusSelect.addEventListener("change", changed);
  opSelect.addEventListener("change", changed);
  metaInput.addEventListener("change", changed);
  next.addEventListener("click", () => {
    if (!page || !page.next_cursor) return;
    state.cursors.push(page.next_cursor);
    load().catch((error) => showError(error, rows));
  });
  prev.addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    load().catch((error) => showError(error, rows));
  });

  api("/v1/ops").then((ops) => {
    for (const op of ops.ops) opSelect.append(h("option", { value: op.name, selected: op.name === state.op }, op.name));
  }).catch(() => {});
  const stopList = every(LIST_EVERY_MS, load);
  const stopStats = every(STATS_EVERY_MS, loadStats);
  return () => { stopList(); stopStats(); };
}

// An op's flow control in one line: its key, the key's concurrency, the
// weights, and its rate with the starts in the current window.
function flowText(flow) {
  const parts = [];
  if (flow.key) parts.push(`key ${flow.key}`);
  if (flow.key_concurrency) parts.push(`at most ${flow.key_concurrency} running per key`);
  const weights = Object.entries(flow.weights || {});
  if (weights.length) parts.push(`weights ${weights.map(([key, weight]) => `${key}=${weight}`).join(", ")}`);
  if (flow.rate) {
    let rate = `rate ${flow.rate}${flow.rate_per_key ? " per key" : ""}: ${flow.rate_used ?? 0} started in the window`;
    if (flow.rate_free_at) rate += `, next start at ${when(flow.rate_free_at)}`;
    parts.push(rate);
  }
  return `Flow control: ${parts.join(" · ")}`;
}

// A task's metadata as small KEY=VALUE chips; with `pick`, each is a button
// that filters the list on it.
function metaChips(metadata, pick) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return "";
  return h("span", { class: "meta" }, entries.map(([key, value]) => pick
    ? h("button", { type: "button", class: "chip", title: `Show only tasks with ${key}=${value}`, onclick: () => pick(key, value) }, `${key}=${value}`)
    : h("span", { class: "chip" }, `${key}=${value}`)));
}

function copy(text) {
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => { conn.textContent = "copied"; }, () => { conn.textContent = text; });
  } else {
    conn.textContent = text;
  }
}

// Tasks ended per minute over the last hour, stacked by status.
function activityChart(stats) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 600;
  const height = 120;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const total = stats.finished.reduce((sum, m) => sum + m.succeeded + m.failed + m.cancelled, 0);
  svg.setAttribute("aria-label", `Tasks ended per minute over the last ${stats.window / 60} minutes: ${total} in all`);
  svg.id = "activity";
  const max = Math.max(1, ...stats.finished.map((m) => m.succeeded + m.failed + m.cancelled));
  const slot = width / stats.finished.length;
  const colours = { succeeded: "#16a34a", failed: "#dc2626", cancelled: "#d97706" };
  stats.finished.forEach((minute, index) => {
    let y = height;
    for (const status of ["succeeded", "failed", "cancelled"]) {
      const value = minute[status];
      if (!value) continue;
      const barHeight = (value / max) * (height - 4);
      y -= barHeight;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", (index * slot + 1).toFixed(1));
      rect.setAttribute("y", y.toFixed(1));
      rect.setAttribute("width", Math.max(1, slot - 2).toFixed(1));
      rect.setAttribute("height", barHeight.toFixed(1));
      rect.setAttribute("fill", colours[status]);
      rect.setAttribute("data-status", status);
      rect.setAttribute("data-count", value);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${new Date(minute.minute).toLocaleTimeString(undefined, { hour12: false })}: ${value} ${status}`;
      rect.append(title);
      svg.append(rect);
    }
  });
  return h("div", {},
    h("h2", {}, "Finished per minute, last hour"),
    svg,
    h("div", { class: "axis" }, h("span", {}, `${stats.window / 60} min ago`), h("span", {}, "now")),
    h("div", { class: "legend" },
      Object.keys(colours).map((status) => h("span", {}, h("i", { class: status }), status))));
}

// ---------------------------------------------------------------- a task

// Reads an SSE stream from `response`, calling `onEvent(id, type, data)`.
async function readSse(response, onEvent, signal, onBytes = () => {}) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let id = null;
  let type = "message";
  let data = [];
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      let line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onEvent(id, type, data.join("\n"));
        type = "message";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let content = colon < 0 ? "" : line.slice(colon + 1);
      if (content.startsWith(" ")) content = content.slice(1);
      if (field === "id") id = content;
      else if (field === "event") type = content;
      else if (field === "data") data.push(content);
    }
  }
}

function json(value) {
  return h("pre", {}, JSON.stringify(value, null, 2));
}

function detailPage(taskId) {
  const controller = new AbortController();
  const rowBox = h("div", { class: "card", id: "task-row" }, h("p", { class: "muted" }, "Loading…"));
  const phases = h("div", { id: "phases" });
  const resultBox = h("div", { id: "result" });
  const timeline = h("ol", { class: "timeline", id: "timeline", "aria-label": "Event tape" });
  const timelineNote = h("p", { class: "muted", id: "timeline-note" });
  let hidden = 0;
  const actions = h("div", { class: "actions", id: "actions" });
  const streamState = h("span", { class: "muted", id: "stream-state", role: "status" });
  const command = `tasktape tasks events ${taskId} --follow`;
  main.replaceChildren(
    h("p", {}, h("a", { href: "/", "data-link": true }, "← all tasks")),
    h("h1", {}, "Task ", h("code", {}, taskId)),
    rowBox,
    actions,
    h("div", { class: "card" }, h("h2", {}, "Progress"), phases),
    resultBox,
    h("div", { class: "card" },
      h("h2", {}, "Tape ", streamState),
      timelineNote,
      timeline),
    h("p", {}, "From a terminal: ", h("code", { class: "cmd", id: "follow-command" }, command), " ",
      h("button", { class: "secondary", type: "button", id: "copy-command", onclick: () => copy(command) }, "Copy")));

  const progress = new Map(); // phase → event
  let row = null;
  let nextSeq = 1;
  let ended = false;

  let actionsFor = null; // "live" or "ended": what the buttons were drawn for
  const drawRow = () => {
    if (!row) return;
    rowBox.replaceChildren(h("dl", { class: "row" },
      h("dt", {}, "Op"), h("dd", {}, row.op),
      h("dt", {}, "Status"), h("dd", { id: "task-status" }, badge(row.status)),
      h("dt", {}, "Created"), h("dd", {}, when(row.created_at)),
      h("dt", {}, "Started"), h("dd", {}, when(row.started_at) || "—"),
      h("dt", {}, "Finished"), h("dd", {}, when(row.finished_at) || "—"),
      h("dt", {}, "Took"), h("dd", {}, took(row.started_at, row.finished_at) || "—"),
      h("dt", {}, "Metadata"), h("dd", { id: "task-metadata" }, metaChips(row.metadata) || "—"),
      h("dt", {}, "Params"), h("dd", {}, row.params === undefined
        ? h("span", { class: "muted" }, "not shown (the op is not registered on this server)")
        : h("details", { id: "task-params" }, h("summary", {}, "params JSON (secrets masked)"), json(row.params))),
      h("dt", {}, "Params digest"), h("dd", {}, h("code", {}, row.params_digest || "(none)"))));
    const live = row.status === "pending" || row.status === "running";
    if (actionsFor !== (live ? "live" : "ended")) drawActions();
    if (row.status === "succeeded") {
      resultBox.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Result"),
        h("details", { open: true }, h("summary", {}, "result JSON"), h("div", { id: "result-json" }, json(row.result)))));
    } else if (row.status === "failed" && row.error) {
      resultBox.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Error"),
        h("p", { class: "error" }, `${row.error.code}: ${row.error.message}`),
        h("details", {}, h("summary", {}, "error JSON"), json(row.error))));
    }
  };

  const drawActions = () => {
    const live = row && (row.status === "pending" || row.status === "running");
    actionsFor = live ? "live" : "ended";
    const button = live
      ? h("button", { class: "danger", type: "button", id: "cancel-task" }, "Cancel task")
      : h("button", { class: "danger", type: "button", id: "delete-task" }, "Delete task");
    button.addEventListener("click", () => {
      const yes = h("button", { class: "danger", type: "button", id: "confirm-yes" }, live ? "Yes, cancel it" : "Yes, delete it");
      const no = h("button", { class: "secondary", type: "button", id: "confirm-no" }, "No");
      const box = h("span", { class: "confirm", role: "alertdialog", "aria-label": "Confirm" },
        live ? "Cancel this task?" : "Delete this task and its tape?", yes, no);
      actions.replaceChildren(box);
      yes.focus();
      no.addEventListener("click", drawActions);
      yes.addEventListener("click", async () => {
        try {
          if (live) {
            await api(`/v1/tasks/${taskId}/cancel`, { method: "POST" });
            actions.replaceChildren(h("span", { class: "muted" }, "cancel requested…"));
          } else {
            await api(`/v1/tasks/${taskId}`, { method: "DELETE" });
            go("/");
          }
        } catch (error) {
          actions.replaceChildren(h("span", { class: "error", role: "alert" }, error.message));
        }
      });
    });
    actions.replaceChildren(button);
  };

  const drawPhases = () => {
    if (!progress.size) {
      phases.replaceChildren(h("p", { class: "muted" }, "No progress reported."));
      return;
    }
    phases.replaceChildren(...[...progress.values()].map((event) =>
      h("div", { class: "phase", "data-phase": event.phase }, progressBar(event))));
  };

  const addEvent = (event) => {
    if (event.seq < nextSeq) return; // seen already (a resumed stream)
    nextSeq = event.seq + 1;
    const parts = [h("span", { class: "seq" }, `#${event.seq}`), " ", h("span", { class: "muted" }, when(event.ts)), " ",
      h("span", { class: "type" }, event.type), " "];
    let item;
    if (event.type === "log") {
      item = h("li", { class: `log-${event.level}`, "data-type": "log" }, parts, `[${event.level}] ${event.message}`);
    } else if (event.type === "progress") {
      progress.set(event.phase, event);
      drawPhases();
      item = h("li", { "data-type": "progress" }, parts, `${event.phase} ${event.current}/${event.total}`);
    } else if (event.type === "partial") {
      item = h("li", { "data-type": "partial" }, parts, event.kind,
        h("details", {}, h("summary", {}, "payload"), json(event.payload)));
    } else if (event.type === "final") {
      item = h("li", { "data-type": "final" }, parts, badge(event.status),
        event.result !== undefined ? h("details", {}, h("summary", {}, "result"), json(event.result)) : null,
        event.error ? h("details", {}, h("summary", {}, "error"), json(event.error)) : null);
      ended = true;
    } else {
      item = h("li", { "data-type": event.type }, parts);
    }
    timeline.append(item);
    // A long tape keeps its newest events on the page (the rest is one
    // `tasktape tasks events` away).
    if (timeline.childElementCount > TIMELINE_MAX) {
      timeline.firstElementChild.remove();
      hidden += 1;
      timelineNote.textContent = `${hidden} earlier events not shown`;
    }
  };

  const follow = async () => {
    let delay = 500;
    while (!ended && !controller.signal.aborted) {
      // One connection: aborted with the page, or when nothing (heartbeats
      // included, every 15 s) arrived for 45 s — a half-open connection.
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      controller.signal.addEventListener("abort", stop);
      let watchdog = setTimeout(stop, 45000);
      const alive = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(stop, 45000);
      };
      try {
        const response = await fetch(`/v1/tasks/${taskId}/events/stream`, {
          headers: headers(nextSeq > 1 ? { "Last-Event-ID": String(nextSeq - 1) } : {}),
          signal: attempt.signal,
        });
        if (response.status === 401) {
          sessionStorage.removeItem("tasktape.token");
          await askToken("That token was refused by the server (401). Enter the right one.");
          continue;
        }
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          throw new HttpError(response.status, body);
        }
        streamState.textContent = "(live)";
        await readSse(response, (_id, _type, data) => {
          delay = 500;
          addEvent(JSON.parse(data));
        }, attempt.signal, alive);
        if (!ended) throw new Error("the stream ended before the final event");
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof HttpError && error.status === 404) {
          showError(error);
          return;
        }
        streamState.textContent = "(reconnecting…)";
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 5000);
      } finally {
        clearTimeout(watchdog);
        controller.signal.removeEventListener("abort", stop);
      }
    }
    if (ended) {
      streamState.textContent = "(ended)";
      row = await api(`/v1/tasks/${taskId}`).catch(() => row);
      drawRow();
    }
  };

  api(`/v1/tasks/${taskId}`).then((loaded) => {
    row = loaded;
    drawRow();
    drawPhases();
    follow();
  }).catch((error) => showError(error));
  // The row's times and status while the tape runs.
  const stopRow = every(2000, async () => {
    if (!row || ended) return;
    row = await api(`/v1/tasks/${taskId}`);
    drawRow();
  });
  return () => { controller.abort(); stopRow(); };
}

// ---------------------------------------------------------------- submit

function fieldFor(name, schema, required) {
  const id = `param-${name}`;
  const type = schema.type || "string";
  let input;
  if (schema.enum) {
    input = h("select", { id, name }, required ? null : h("option", { value: "" }, "(none)"),
      schema.enum.map((value) => h("option", { value: String(value), selected: schema.default === value }, String(value))));
  } else if (type === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: schema.default === true });
  } else if (type === "integer" || type === "number") {
    input = h("input", { id, name, type: "number", step: type === "integer" ? "1" : "any",
      min: schema.minimum, max: schema.maximum, value: schema.default ?? "" });
  } else if (type === "array" || type === "object") {
    const value = schema.default === undefined ? "" : type === "array" ? schema.default.join("\n") : JSON.stringify(schema.default, null, 2);
    input = h("textarea", { id, name, rows: 3, placeholder: type === "array" ? "one item per line" : "{ }" }, value);
  } else {
    input = h("input", { id, name, type: schema.format === "password" ? "password" : "text", value: schema.default ?? "" });
  }
  if (required) input.setAttribute("aria-required", "true");
  const help = [schema.description, schema.minimum !== undefined ? `≥ ${schema.minimum}` : null,
    schema.maximum !== undefined ? `≤ ${schema.maximum}` : null,
    schema.default !== undefined && !schema.writeOnly ? `default ${JSON.stringify(schema.default)}` : null].filter(Boolean).join(" · ");
  const error = h("div", { class: "field-error", id: `${id}-error`, "data-error-for": name, role: "alert" });
  input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  return {
    element: h("div", { class: "field" },
      h("label", { for: id, class: required ? "required" : "" }, `${name} (${type})`),
      input,
      h("div", { class: "help", id: `${id}-help` }, help),
      error),
    read() {
      error.textContent = "";
      if (type === "boolean") return { value: input.checked };
      const text = input.value;
      if (text === "") {
        if (required) return { error: "required" };
        return {};
      }
      if (type === "integer" || type === "number") {
        const value = Number(text);
        if (!Number.isFinite(value) || (type === "integer" && !Number.isInteger(value))) return { error: `must be ${type === "integer" ? "a whole number" : "a number"}` };
        if (schema.minimum !== undefined && value < schema.minimum) return { error: `must be ≥ ${schema.minimum}` };
        if (schema.maximum !== undefined && value > schema.maximum) return { error: `must be ≤ ${schema.maximum}` };
        return { value };
      }
      if (type === "array") return { value: text.split("\n").map((line) => line.trim()).filter(Boolean) };
      if (type === "object") {
        try {
          const value = JSON.parse(text);
          if (typeof value !== "object" || Array.isArray(value) || value === null) return { error: "must be a JSON object" };
          return { value };
        } catch {
          return { error: "must be valid JSON" };
        }
      }
      if (schema.enum && !schema.enum.map(String).includes(text)) return { error: "pick one of the listed values" };
      return { value: text };
    },
    fail(message) {
      error.textContent = message;
    },
  };
}

function submitPage() {
  const opSelect = h("select", { id: "submit-op", name: "op" });
  const fieldsBox = h("div", { id: "fields" });
  const formError = h("div", { class: "error", id: "form-error", role: "alert" });
  const description = h("p", { class: "muted", id: "op-description" });
  const form = h("form", { class: "submit card", id: "submit-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "submit-op" }, "Op"), opSelect),
    description,
    fieldsBox,
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "submit-button" }, "Submit")));
  main.replaceChildren(h("h1", {}, "Submit a task"), form);
  let ops = [];
  let fields = new Map();

  const drawFields = () => {
    const op = ops.find((candidate) => candidate.name === opSelect.value);
    fields = new Map();
    fieldsBox.replaceChildren();
    formError.textContent = "";
    if (!op) return;
    description.textContent = op.description;
    const schema = op.params_schema || {};
    const required = new Set(schema.required || []);
    for (const [name, property] of Object.entries(schema.properties || {})) {
      const field = fieldFor(name, property, required.has(name));
      fields.set(name, field);
      fieldsBox.append(field.element);
    }
    if (!fields.size) fieldsBox.append(h("p", { class: "muted" }, "This op takes no parameters."));
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.textContent = "";
    const params = {};
    let bad = false;
    for (const [name, field] of fields) {
      const read = field.read();
      if (read.error) {
        field.fail(read.error);
        bad = true;
      } else if ("value" in read) {
        params[name] = read.value;
      }
    }
    if (bad) return;
    try {
      const handle = await api("/v1/tasks", { method: "POST", body: JSON.stringify({ op: opSelect.value, params }) });
      go(`/tasks/${handle.task_id}`);
    } catch (error) {
      const field = error.detail && fields.get(error.detail.field);
      if (error.status === 422 && field) field.fail(error.detail.msg || error.message);
      else formError.textContent = error.message;
    }
  });
  opSelect.addEventListener("change", drawFields);
  api("/v1/ops").then((list) => {
    ops = list.ops;
    const wanted = new URLSearchParams(location.search).get("op");
    for (const op of ops) opSelect.append(h("option", { value: op.name, selected: op.name === wanted }, op.name));
    drawFields();
  }).catch((error) => showError(error));
  return () => {};
}

// ---------------------------------------------------------------- workers

const WORKERS_EVERY_MS = 2000;

// Remote workers (GET /v1/workers): who serves which ops, how busy, when
// last heard from; a live one can be asked to drain (admin token).
function workersPage() {
  const body = h("tbody");
  const summary = h("p", { class: "muted", id: "workers-summary", role: "status" }, "Loading…");
  const error = h("p", { class: "error", role: "alert" });
  main.replaceChildren(
    h("h1", {}, "Workers"),
    summary,
    error,
    h("div", { class: "table-wrap" },
      h("table", { id: "workers" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Worker"),
          h("th", { scope: "col" }, "State"),
          h("th", { scope: "col" }, "Ops"),
          h("th", { scope: "col" }, "Running"),
          h("th", { scope: "col" }, "Host / pid"),
          h("th", { scope: "col" }, "Version"),
          h("th", { scope: "col" }, "Last heartbeat"),
          h("th", { scope: "col" }, ""))),
        body)));
  const draw = (workers) => {
    const live = workers.filter((worker) => worker.state !== "gone").length;
    summary.textContent = workers.length
      ? `${live} live or draining, ${workers.length - live} gone (seen in the last day)`
      : "No remote worker has registered in the last day. Start one with `tasktape worker` or the Python package.";
    body.replaceChildren(...workers.map((worker) => h("tr", { "data-worker": worker.worker_id },
      h("td", {}, h("code", {}, worker.worker_id)),
      h("td", {}, h("span", { class: `badge ${worker.state === "live" ? "running" : worker.state === "draining" ? "pending" : "cancelled"}`, "data-state": worker.state }, worker.state)),
      h("td", {}, worker.ops.join(", ")),
      h("td", { "data-running": worker.running }, `${worker.running} / ${worker.capacity}`),
      h("td", {}, `${worker.host} / ${worker.pid}`),
      h("td", {}, worker.version),
      h("td", {}, when(worker.last_heartbeat)),
      h("td", {}, worker.state === "live"
        ? h("button", {
          type: "button",
          "data-drain": worker.worker_id,
          onclick: async (event) => {
            event.target.disabled = true;
            try {
              await api(`/v1/workers/${encodeURIComponent(worker.worker_id)}/drain`, { method: "POST" });
              error.textContent = "";
            } catch (failure) {
              error.textContent = failure.message;
              event.target.disabled = false;
            }
          },
        }, "Drain")
        : ""))));
  };
  return every(WORKERS_EVERY_MS, async () => draw((await api("/v1/workers")).workers));
}

// ---------------------------------------------------------------- start

route();
