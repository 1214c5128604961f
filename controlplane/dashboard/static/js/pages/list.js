// @ts-check
/** Endpoints list: every namespace the session sees, polled every second (a state change shows within ~1 s). */
import { endpointPage, endpointPath, get } from "../api.js";
import { copyButton, field, h, poll, replace, stateBadge, timeElement } from "../dom.js";

const POLL_MS = 1000;

/** @param {any} e */
function hardware(e) {
  const c = e.compute || {};
  return `${c.instanceType || "?"} · ${c.instanceSize || "?"} (${c.accelerator || "?"})`;
}

/** @param {any} e @param {boolean} showNamespace */
function row(e, showNamespace) {
  const status = e.status || {};
  const ns = e.namespace || "";
  const stuck = status.message && !["running", "paused", "scaledToZero"].includes(status.state);
  return h("tr", { dataset: { endpoint: `${ns}/${e.name}`, state: status.state || "" } },
    h("td", {}, h("a", { href: endpointPage(ns, e.name), class: "name" }, e.name),
      stuck ? h("div", { class: "message" }, status.message) : null),
    showNamespace ? h("td", {}, ns) : null,
    h("td", {}, stateBadge(status.state || "unknown")),
    h("td", { class: "replicas" }, `${status.readyReplica ?? 0} / ${status.targetReplica ?? 0}`),
    h("td", {}, hardware(e)),
    h("td", {}, status.url ? [h("span", { class: "mono url" }, status.url), " ", copyButton(status.url, "Copy URL")]
      : h("span", { class: "muted" }, "—")),
    h("td", {}, timeElement(status.updatedAt)));
}

/** @param {HTMLElement} main @param {{session: any, signal: AbortSignal}} ctx */
export function render(main, ctx) {
  const namespaces = /** @type {string[]} */ (ctx.session.namespaces);
  const nsSelect = /** @type {HTMLSelectElement} */ (h("select", { id: "filter-namespace" },
    h("option", { value: "" }, "All"), namespaces.map((n) => h("option", { value: n }, n))));
  const stateSelect = /** @type {HTMLSelectElement} */ (h("select", { id: "filter-state" },
    h("option", { value: "" }, "All"),
    ["pending", "initializing", "running", "updating", "updateFailed", "paused", "scaledToZero", "failed"]
      .map((s) => h("option", { value: s }, s))));
  const showNamespace = namespaces.length > 1;
  const tbody = h("tbody", { id: "endpoints-body" });
  const empty = h("p", { class: "muted", id: "endpoints-empty", hidden: true }, "No endpoints.");
  const error = h("p", { class: "error", role: "alert" });
  const table = h("table", { id: "endpoints", "aria-label": "Endpoints" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), showNamespace ? h("th", { scope: "col" }, "Namespace") : null,
      h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Replicas (ready / desired)"),
      h("th", { scope: "col" }, "Hardware"), h("th", { scope: "col" }, "URL"), h("th", { scope: "col" }, "Last change"))),
    tbody);
  /** @type {any[]} */
  let items = [];
  const draw = () => {
    const ns = nsSelect.value;
    const st = stateSelect.value;
    const shown = items.filter((e) => (!ns || e.namespace === ns) && (!st || (e.status || {}).state === st));
    replace(tbody, shown.map((e) => row(e, showNamespace)));
    empty.hidden = shown.length > 0;
  };
  nsSelect.addEventListener("change", draw);
  stateSelect.addEventListener("change", draw);
  replace(main, h("h1", {}, "Endpoints"),
    h("div", { class: "filters" }, showNamespace ? field("Namespace", nsSelect) : null, field("State", stateSelect),
      h("a", { href: "/ui/new" }, "New endpoint")),
    error, table, empty);
  poll(async () => {
    const pages = await Promise.all(namespaces.map((n) => get(endpointPath(n), { signal: ctx.signal })));
    items = pages.flatMap((p) => p.items).sort((a, b) =>
      `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
    error.textContent = "";
    main.dataset.loaded = "true";
    draw();
  }, POLL_MS, ctx.signal);
}
