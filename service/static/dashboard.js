// The dashboard page: the model list, and for the selected model its live learning curves
// (history first, then the event stream) and its versions with promote and rollback.

import { ApiError, EventStream, api, token } from "./api.js";
import { renderCandidates } from "./candidates.js";
import { LossChart, MARKERS, formatNumber } from "./chart.js";

const HISTORY_POINTS = 500;
const POLL_MS = 5000;
const VERSIONS_SHOWN = 50;
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  selected: null,
  stream: null,
  refreshTimer: null,
  refreshVersions: false,
  errorSource: null,
};
let chart;

function el(tag, { text, className, title, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  if (title) node.title = title;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

// -- messages ---------------------------------------------------------------------------------

function showError(error, source) {
  const text = error instanceof ApiError ? error.describe() : `unexpected error: ${error}`;
  $("error-text").textContent = text;
  $("error").hidden = false;
  state.errorSource = source;
}

function clearError(source) {
  if (state.errorSource === source) {
    $("error").hidden = true;
    state.errorSource = null;
  }
}

function notify(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (notice.hidden = true), 4000);
}

const CONNECTION = {
  idle: "idle",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "stream closed",
};

function setConnection(kind, error) {
  const pill = $("connection");
  pill.dataset.state = kind;
  pill.textContent = CONNECTION[kind];
  pill.title = error ? String(error.message ?? error) : "Live event stream";
  if (kind === "closed" && error) showError(error, "stream");
  if (kind === "live") clearError("stream");
}

// -- models -----------------------------------------------------------------------------------

const monitorOf = (model) => model.training.monitor;
const badge = (model) =>
  el("span", {
    text: model.state,
    className: `badge badge-${model.state}`,
    title: model.stopping_reason ?? "",
  });

async function refreshModels() {
  try {
    state.models = (await api.models()).models;
    clearError("poll");
  } catch (error) {
    showError(error, "poll");
    return;
  }
  renderModels();
  const current = state.models.find((m) => m.name === state.selected);
  if (current) renderModel(current);
  else if (state.selected) deselect(`model ${state.selected} no longer exists`);
  else if (!location.hash && state.models.length === 1) select(state.models[0].name);
}

function renderModels() {
  $("models-empty").hidden = state.models.length > 0;
  const rows = state.models.map((model) => {
    // A long name is cut with an ellipsis; the whole name shows on hover.
    const name = el("button", {
      text: model.name,
      className: "link name",
      title: model.name,
      attrs: { type: "button" },
    });
    const row = el(
      "tr",
      { attrs: { "data-model": model.name } },
      el(
        "td",
        { className: "name" },
        name,
        el("div", { text: `step ${formatNumber(model.step)}`, className: "muted small" }),
      ),
      el("td", {}, badge(model)),
      el("td", {
        text: `v${model.served_version} / v${model.head_version}`,
        title: "served / head",
      }),
      el("td", { text: `${formatNumber(model.best_metric)}`, title: monitorOf(model) }),
    );
    if (model.name === state.selected) row.setAttribute("aria-current", "true");
    row.addEventListener("click", () => select(model.name));
    return row;
  });
  $("models").tBodies[0].replaceChildren(...rows);
}

function renderModel(model) {
  $("model-title").textContent = model.name;
  $("model-title").title = model.name;
  $("model-state").replaceWith(Object.assign(badge(model), { id: "model-state" }));
  $("model-reason").textContent = model.stopping_reason ? `stopped: ${model.stopping_reason}` : "";
  const last = chart.points[chart.points.length - 1] ?? {};
  const stats = [
    ["Task", model.task],
    ["Network", [model.spec.inputs, ...model.spec.hidden, model.spec.outputs].join(" → ")],
    // a round seen on the stream can be newer than the model polled a moment ago
    ["Step", formatNumber(Math.max(model.step, last.step ?? 0))],
    ["Samples seen", formatNumber(Math.max(model.samples_seen, last.samples_seen ?? 0))],
    [
      "Served / head / best",
      `v${model.served_version} / v${model.head_version} / v${model.best_version}`,
    ],
    [`Best ${monitorOf(model)}`, formatNumber(model.best_metric)],
    ["Rounds since improvement", `${model.rounds_since_improvement} of ${model.training.patience}`],
    ["Last train loss", formatNumber(last.train_loss)],
    ["Last val loss", formatNumber(last.val_loss)],
  ];
  if ("val_accuracy" in last) stats.push(["Last val accuracy", formatNumber(last.val_accuracy)]);
  stats.push(["Validation rows", formatNumber(model.validation_rows)], ["Device", model.device]);
  $("stats").replaceChildren(
    ...stats.map(([term, value]) =>
      el("div", {}, el("dt", { text: term }), el("dd", { text: value })),
    ),
  );
}

// -- the selected model -----------------------------------------------------------------------

function deselect(reason) {
  state.stream?.stop();
  state.stream = null;
  state.selected = null;
  $("detail").hidden = true;
  $("placeholder").hidden = false;
  setConnection("idle", null);
  renderModels();
  if (reason) showError(new ApiError(404, "model_not_found", reason), "select");
}

async function select(name) {
  if (name === state.selected && state.stream) return;
  state.stream?.stop();
  state.stream = null;
  state.selected = name;
  history.replaceState(null, "", `#model=${encodeURIComponent(name)}`);
  $("placeholder").hidden = true;
  $("detail").hidden = false;
  $("detail").dataset.model = name;
  chart.reset([], []);
  $("candidates-panel").hidden = true;
  renderModels();
  let loaded;
  try {
    loaded = await Promise.all([
      api.history(name, HISTORY_POINTS),
      api.versions(name),
      api.model(name),
    ]);
  } catch (error) {
    if (state.selected === name) showError(error, "select");
    return;
  }
  if (state.selected !== name) return; // another model was picked meanwhile
  clearError("select");
  const [curve, versions, model] = loaded;
  chart.reset(curve.points, curve.markers);
  renderModel(model);
  renderVersions(versions, model);
  refreshCandidates(name, model);
  const after = Math.max(0, ...curve.markers.map((m) => m.id));
  state.stream = new EventStream(name, { after, onEvent, onState: setConnection }).start();
}

function onEvent(event) {
  const data = event.data ?? {};
  if (event.kind === "round") {
    chart.addPoint(data);
    const model = state.models.find((m) => m.name === state.selected);
    if (model) renderModel(model);
    scheduleRefresh({ versions: false });
    return;
  }
  if (event.kind in MARKERS) {
    chart.addMarker({
      id: event.id,
      kind: event.kind,
      version: event.version,
      step: data.step,
      reason: data.reason,
    });
  }
  scheduleRefresh({ versions: true });
}

// Events come in bursts (a round, a checkpoint and a promotion per improving round): at most
// one refresh of the list (and of the versions, when they can have changed) per 300 ms.
function scheduleRefresh({ versions }) {
  state.refreshVersions ||= versions;
  if (state.refreshTimer) return; // one is due: it will see this event's effects too
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    const [name, withVersions] = [state.selected, state.refreshVersions];
    state.refreshVersions = false;
    await refreshModels();
    if (name && name === state.selected) {
      refreshCandidates(name, state.models.find((m) => m.name === name));
    }
    if (!withVersions || !name || name !== state.selected) return;
    try {
      const model = state.models.find((m) => m.name === name);
      renderVersions(await api.versions(name), model);
    } catch (error) {
      showError(error, "versions");
    }
  }, 300);
}

// -- candidates (a race) ---------------------------------------------------------------------

async function refreshCandidates(name, model) {
  let list;
  try {
    list = await api.candidates(name);
  } catch (error) {
    showError(error, "candidates");
    return;
  }
  if (name !== state.selected) return;
  const racing = list.candidates.length > 0;
  $("candidates-panel").hidden = !racing;
  if (racing) {
    renderCandidates($("candidates"), $("candidates-legend"), list.candidates,
      model?.training?.monitor);
  }
}

// -- versions ---------------------------------------------------------------------------------

// One line per metric, the monitored one first.
function metricsCell(metrics, monitor) {
  const keys = Object.keys(metrics).sort((a, b) =>
    a === monitor ? -1 : b === monitor ? 1 : a.localeCompare(b),
  );
  const lines = keys.map((key) => el("div", { text: `${key} ${formatNumber(metrics[key])}` }));
  return el("td", { className: "metrics", text: lines.length ? undefined : "—" }, ...lines);
}

function renderVersions(list, model) {
  const monitor = model ? monitorOf(model) : "";
  const shown = [...list.versions].reverse().slice(0, VERSIONS_SHOWN);
  $("versions-note").textContent =
    list.versions.length > shown.length ? `newest ${shown.length} of ${list.versions.length}` : "";
  const rows = shown.map((version) => {
    const tags = [];
    if (version.served) tags.push(el("span", { text: "served", className: "tag tag-served" }));
    if (version.version === list.head_version)
      tags.push(el("span", { text: "head", className: "tag" }));
    if (model && version.version === model.best_version)
      tags.push(el("span", { text: "best", className: "tag" }));
    const ready = version.status === "ready";
    const promote = actionButton("Promote", "promote", version.version, !ready || version.served);
    const rollback = actionButton("Roll back", "rollback", version.version, !ready);
    return el(
      "tr",
      { attrs: { "data-version": version.version }, className: version.served ? "served" : "" },
      el("td", {}, el("strong", { text: `v${version.version}` }), ...tags),
      el("td", { text: formatNumber(version.step) }),
      el("td", { text: formatNumber(version.samples_seen) }),
      metricsCell(version.metrics, monitor),
      el("td", { text: version.reason }),
      el("td", { text: version.status, className: `status-${version.status}` }),
      el("td", { text: DATE.format(new Date(version.created_at)), className: "muted created" }),
      el("td", { className: "actions" }, promote, rollback),
    );
  });
  $("versions").tBodies[0].replaceChildren(...rows);
}

function actionButton(label, action, version, disabled) {
  const button = el("button", {
    text: label,
    className: action,
    attrs: { type: "button", "data-action": action },
  });
  button.disabled = disabled;
  button.addEventListener("click", () => act(action, version, button));
  return button;
}

async function act(action, version, button) {
  const name = state.selected;
  const question = `Roll ${name} back to v${version}? Its training head restarts from there.`;
  if (action === "rollback" && !window.confirm(question)) return;
  button.disabled = true;
  try {
    await api[action](name, version);
    clearError("action");
    notify(
      action === "promote"
        ? `${name}: v${version} is served`
        : `${name}: rolled back to v${version}`,
    );
  } catch (error) {
    showError(error, "action");
    button.disabled = false;
  }
  scheduleRefresh({ versions: true });
}

// -- start ------------------------------------------------------------------------------------

function hashModel() {
  const match = /^#model=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function setupToken() {
  const input = $("token");
  const show = () => (input.placeholder = token.get() ? "saved for this tab" : "not set");
  show();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) token.set(input.value);
    input.value = "";
    show();
    notify(token.get() ? "Token saved for this tab" : "No token entered");
  });
  $("token-clear").addEventListener("click", () => {
    token.clear();
    input.value = "";
    show();
    notify("Token cleared");
  });
}

function start() {
  chart = new LossChart($("chart"), $("legend"), $("readout"));
  setupToken();
  $("error-close").addEventListener("click", () => {
    $("error").hidden = true;
    state.errorSource = null;
  });
  window.addEventListener("hashchange", () => {
    const name = hashModel();
    if (name) select(name);
  });
  const initial = hashModel();
  if (initial) select(initial);
  refreshModels();
  setInterval(refreshModels, POLL_MS);
}

start();
