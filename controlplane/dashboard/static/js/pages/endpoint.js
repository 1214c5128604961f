// @ts-check
/**
 * One endpoint: status and conditions, configuration, actions (pause, resume, scale to zero, replicas, delete with
 * the name typed), the events timeline, the replicas' logs followed live, and the charts (charts.js). The endpoint
 * and its events are polled every second, so an action's effect shows up as the worker makes it.
 */
import { ApiError, del, endpointPath, get, post, put, request } from "../api.js";
import { copyButton, field, h, poll, replace, stateBadge, timeElement, toast } from "../dom.js";

const POLL_MS = 1000;
const MAX_LOG_LINES = 2000;

/** @param {HTMLElement} main @param {{session: any, params: any, signal: AbortSignal}} ctx */
export function render(main, ctx) {
  const ns = String(ctx.params.namespace);
  const name = String(ctx.params.name);
  const path = endpointPath(ns, name);
  document.title = `${name} · endpointctl`;

  const title = h("h1", {}, h("span", { class: "muted" }, `${ns} / `), name, " ", h("span", { id: "state" }));
  const actionError = h("p", { class: "error", id: "action-error", role: "alert" });
  const actions = h("div", { class: "actions", id: "actions" });
  const statusGrid = h("dl", { class: "grid", id: "status" });
  const conditions = h("tbody", { id: "conditions" });
  const config = h("dl", { class: "grid", id: "config" });
  const env = h("tbody", { id: "env" });
  const events = h("ol", { class: "timeline", id: "events", "aria-live": "polite" });
  const charts = h("section", { id: "charts", class: "charts", "aria-label": "Charts" }, h("h2", {}, "Metrics"));

  replace(main, title,
    h("p", {}, h("a", { href: `/ui/endpoints/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/playground`,
      id: "playground-link" }, "Playground")),
    h("section", { class: "card", "aria-label": "Actions" }, actions, actionError),
    h("section", { class: "card", "aria-labelledby": "h-status" }, h("h2", { id: "h-status" }, "Status"), statusGrid,
      h("h2", {}, "Conditions"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Since"]
        .map((t) => h("th", { scope: "col" }, t)))), conditions)),
    charts,
    h("section", { class: "card", "aria-labelledby": "h-events" }, h("h2", { id: "h-events" }, "Events"), events),
    logsSection(path, ctx.signal),
    h("section", { class: "card", "aria-labelledby": "h-config" }, h("h2", { id: "h-config" }, "Configuration"), config,
      h("h2", {}, "Environment"), h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "Value"))), env),
      h("p", { class: "muted" }, "Secrets are write-only: they are never shown.")));

  /** @type {any} */
  let current = null;
  const act = async (/** @type {string} */ label, /** @type {() => Promise<any>} */ fn) => {
    actionError.textContent = "";
    try {
      current = await fn();
      toast(`${label}: done`);
      if (current) draw(current);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      actionError.textContent = `${label}: ${/** @type {any} */ (err).message || err}`;
    }
  };

  const replicaMin = /** @type {HTMLInputElement} */ (h("input", { type: "number", min: "0", id: "min-replica",
    "data-param": "compute.scaling.minReplica", class: "narrow" }));
  const replicaMax = /** @type {HTMLInputElement} */ (h("input", { type: "number", min: "1", id: "max-replica",
    "data-param": "compute.scaling.maxReplica", class: "narrow" }));
  const buttons = {
    pause: h("button", { type: "button", id: "pause", onclick: () => act("Pause", () => post(`${path}/pause`)) }, "Pause"),
    resume: h("button", { type: "button", id: "resume", onclick: () => act("Resume", () => post(`${path}/resume`)) },
      "Resume"),
    zero: h("button", { type: "button", id: "scale-to-zero",
      onclick: () => act("Scale to zero", () => post(`${path}/scale-to-zero`)) }, "Scale to zero"),
    replicas: h("button", { type: "button", id: "update-replicas", onclick: () => act("Update replicas", () => put(path,
      { compute: { scaling: { minReplica: Number(replicaMin.value), maxReplica: Number(replicaMax.value) } } })) },
    "Update replicas"),
    remove: h("button", { type: "button", id: "delete", class: "danger", onclick: () => confirmDelete() }, "Delete…"),
  };
  let replicasFilled = false;
  replace(actions, buttons.pause, buttons.resume, buttons.zero,
    field("Min replicas", replicaMin), field("Max replicas", replicaMax), buttons.replicas, buttons.remove);

  const confirmInput = /** @type {HTMLInputElement} */ (h("input", { type: "text", id: "confirm-name",
    autocomplete: "off", spellcheck: "false" }));
  const confirmButton = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", class: "danger",
    id: "confirm-delete", disabled: true }, "Delete"));
  const dialog = /** @type {HTMLDialogElement} */ (h("dialog", { id: "delete-dialog", "aria-labelledby": "delete-title" },
    h("form", { method: "dialog" },
      h("h2", { id: "delete-title" }, "Delete this endpoint?"),
      h("p", {}, "Its replicas stop and its configuration is removed. Type the endpoint's name to confirm: ",
        h("strong", {}, name)),
      field("Endpoint name", confirmInput),
      h("div", { class: "actions" }, h("button", { type: "button", id: "cancel-delete", onclick: () => dialog.close() },
        "Cancel"), confirmButton))));
  main.appendChild(dialog);
  confirmInput.addEventListener("input", () => { confirmButton.disabled = confirmInput.value !== name; });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue === "Delete" && confirmInput.value === name) {
      await act("Delete", () => del(path));
    }
    confirmInput.value = "";
    confirmButton.disabled = true;
  });
  confirmButton.value = "Delete";
  function confirmDelete() {
    dialog.returnValue = "";
    dialog.showModal();
    confirmInput.focus();
  }

  /** @param {any} e */
  function draw(e) {
    const s = e.status || {};
    main.dataset.state = s.state || "";
    replace(/** @type {HTMLElement} */ (title.querySelector("#state")), stateBadge(s.state || "unknown"));
    const desired = s.desiredState;
    /** @type {HTMLButtonElement} */ (buttons.pause).disabled = desired === "paused" || desired === "deleted";
    /** @type {HTMLButtonElement} */ (buttons.resume).disabled = !(desired === "paused" || desired === "scaledToZero");
    /** @type {HTMLButtonElement} */ (buttons.zero).disabled = desired !== "running";
    /** @type {HTMLButtonElement} */ (buttons.remove).disabled = desired === "deleted";
    const scaling = (e.compute || {}).scaling || {};
    if (!replicasFilled) {
      replicaMin.value = String(scaling.minReplica ?? 0);
      replicaMax.value = String(scaling.maxReplica ?? 1);
      replicasFilled = true;
    }
    replace(statusGrid,
      dt("State"), h("dd", {}, s.state || "", desired && desired !== "running" ? ` (asked: ${desired})` : ""),
      dt("Message"), h("dd", { class: s.message ? "message" : "muted", id: "status-message" }, s.message || "—"),
      dt("Replicas"), h("dd", { id: "replicas" }, `${s.readyReplica ?? 0} ready / ${s.targetReplica ?? 0} desired`),
      dt("URL"), h("dd", {}, s.url ? [h("span", { class: "mono" }, s.url), " ", copyButton(s.url, "Copy URL")] : "—"),
      dt("Generation"), h("dd", {}, `${s.generation ?? "?"} (observed ${s.observedGeneration ?? "—"})`),
      dt("Last change"), h("dd", {}, timeElement(s.updatedAt)));
    replace(conditions, (s.conditions || []).map((/** @type {any} */ c) => h("tr", {},
      h("td", {}, c.type), h("td", {}, String(c.status)), h("td", {}, c.reason || ""),
      h("td", { class: "message" }, c.message || ""), h("td", {}, timeElement(c.lastTransitionTime)))));
    const c = e.compute || {};
    const m = e.model || {};
    const image = m.image ? Object.keys(m.image).join(", ") : "";
    replace(config,
      dt("Model"), h("dd", { class: "mono" }, `${m.repository || ""}${m.revision ? `@${m.revision}` : ""}`),
      dt("Task"), h("dd", {}, m.task || ""), dt("Image"), h("dd", {}, image),
      dt("Hardware"), h("dd", {}, `${c.instanceType} · ${c.instanceSize} (${c.accelerator}) in ${(e.provider || {}).vendor}/${(e.provider || {}).region}`),
      dt("Scaling"), h("dd", {}, `${scaling.minReplica}–${scaling.maxReplica} replicas` +
        (scaling.scaleToZeroTimeout ? `, to zero after ${scaling.scaleToZeroTimeout} min idle` : "")),
      dt("Type"), h("dd", {}, e.type || ""), dt("Created"), h("dd", {}, timeElement(s.createdAt)));
    replace(env, Object.entries(m.env || {}).map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k),
      h("td", { class: "mono env-value" }, String(v)))));
  }

  poll(async () => {
    try {
      current = await get(path, { signal: ctx.signal });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        main.dataset.state = "deleted";
        replace(main, h("h1", {}, `${ns} / ${name}`), h("p", { id: "gone" }, "This endpoint does not exist (any more). "),
          h("a", { href: "/ui/" }, "Back to the endpoints"));
        throw err; // ends nothing: poll logs it and goes on; the page now says it is gone
      }
      throw err;
    }
    draw(current);
  }, POLL_MS, ctx.signal);
  poll(async () => {
    const page = await get(`${path}/events?limit=50`, { signal: ctx.signal });
    replace(events, page.items.map((/** @type {any} */ ev) => h("li", { class: ev.type, dataset: { reason: ev.reason } },
      timeElement(ev.createdAt), " ", h("strong", {}, ev.reason), " ", h("span", { class: "event-message" }, ev.message))));
  }, POLL_MS, ctx.signal);
  import("../charts.js").then((m) => m.mountCharts(charts, ns, name, ctx.signal))
    .catch((err) => { console.error(err); charts.appendChild(h("p", { class: "muted" }, "Charts are unavailable.")); });
}

/** @param {string} text */
function dt(text) {
  return h("dt", {}, text);
}

/**
 * Logs: the last lines, then followed live (`?follow=true` streams); lines are prefixed `[r<N>]` per replica when
 * several run, which the replica filter uses.
 * @param {string} path @param {AbortSignal} pageSignal
 */
function logsSection(path, pageSignal) {
  const pre = h("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Replica logs" });
  const replica = /** @type {HTMLSelectElement} */ (h("select", { id: "log-replica" }, h("option", { value: "" }, "All replicas")));
  const follow = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", id: "log-follow", checked: true }));
  const status = h("span", { class: "muted", id: "log-status" });
  /** @type {string[]} */
  let lines = [];
  const seen = new Set();
  /** @type {AbortController | null} */
  let stream = null;

  // Unprefixed lines come from the only replica there was when they were read (several are always prefixed).
  const matches = (/** @type {string} */ line) => !replica.value || line.startsWith(`[${replica.value}] `)
    || !/^\[[A-Za-z0-9._-]{1,80}\] /.test(line);
  const redraw = () => replace(pre, lines.filter(matches).map((l) => `${l}\n`).join(""));
  const add = (/** @type {string[]} */ batch) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const line of batch) {
      const m = /^\[(r\d+|[A-Za-z0-9._-]{1,80})\] /.exec(line);
      if (m && !seen.has(m[1])) {
        seen.add(m[1]);
        replica.appendChild(h("option", { value: m[1] }, m[1]));
      }
    }
    lines = lines.concat(batch).slice(-MAX_LOG_LINES);
    if (lines.length >= MAX_LOG_LINES) redraw();
    else pre.appendChild(document.createTextNode(batch.filter(matches).map((l) => `${l}\n`).join("")));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };

  async function start() {
    stream?.abort();
    const controller = new AbortController();
    stream = controller;
    pageSignal.addEventListener("abort", () => controller.abort());
    lines = [];
    redraw();
    status.textContent = "loading…";
    try {
      const response = await request("GET", `${path}/logs?tail=300&follow=${follow.checked}`,
        { raw: true, signal: controller.signal, headers: { Accept: "text/plain" } });
      status.textContent = follow.checked ? "following" : "";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const parts = (rest + value).split("\n");
        rest = parts.pop() || "";
        if (parts.length) add(parts);
      }
      if (rest) add([rest]);
      if (follow.checked && !controller.signal.aborted) {
        status.textContent = "stream ended; reconnecting…";
        window.setTimeout(() => { if (stream === controller) start(); }, 2000);
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      status.textContent = `logs unavailable: ${/** @type {any} */ (err).message || err}`;
      if (follow.checked) window.setTimeout(() => { if (stream === controller) start(); }, 3000);
    }
  }
  replica.addEventListener("change", redraw);
  follow.addEventListener("change", start);
  start();
  return h("section", { class: "card", "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs" }, "Logs"),
    h("div", { class: "filters" }, field("Replica", replica),
      h("div", { class: "field" }, h("label", { for: "log-follow" }, follow, " Follow live")), status),
    pre);
}
