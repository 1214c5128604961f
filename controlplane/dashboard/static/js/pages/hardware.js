// @ts-check
/**
 * Hardware: the catalog of a namespace (`GET /v2/provider/{ns}`) with each instance's availability and the
 * accelerators in use against the quota (the cluster's live capacity where the worker has observed it), refreshed
 * every five seconds.
 */
import { get } from "../api.js";
import { field, h, poll, replace } from "../dom.js";

const POLL_MS = 5000;

/** @param {HTMLElement} main @param {{session: any, signal: AbortSignal}} ctx */
export function render(main, ctx) {
  const namespaces = /** @type {string[]} */ (ctx.session.namespaces);
  const nsSelect = /** @type {HTMLSelectElement} */ (h("select", { id: "hardware-namespace" },
    namespaces.map((n) => h("option", { value: n, selected: n === ctx.session.name }, n))));
  const machine = h("p", { id: "machine", class: "muted" });
  const summary = h("p", { id: "accelerators-in-use" });
  const tbody = h("tbody", { id: "hardware-body" });
  const error = h("p", { class: "error", role: "alert" });
  replace(main, h("h1", {}, "Hardware"),
    h("div", { class: "filters" }, field("Namespace", nsSelect)), machine, summary, error,
    h("table", { id: "hardware" }, h("thead", {}, h("tr", {}, ["Instance", "Where", "Accelerator", "CPUs / memory",
      "Price / h", "Availability", "Accelerators used / available"].map((t) => h("th", { scope: "col" }, t)))), tbody));

  const load = async () => {
    const ns = nsSelect.value;
    const catalog = await get(`/v2/provider/${encodeURIComponent(ns)}`, { signal: ctx.signal });
    /** @type {Map<string, {used: number, max: number}>} */
    const byType = new Map();
    const rows = [];
    for (const vendor of catalog.vendors || []) {
      for (const region of vendor.regions || []) {
        for (const c of region.computes || []) {
          const quota = c.quota || {};
          if (c.numAccelerators) byType.set(c.instanceType, { used: quota.usedAccelerators || 0,
            max: quota.maxAccelerators || 0 });
          rows.push(h("tr", { dataset: { compute: c.id || "" } },
            h("td", {}, h("strong", {}, `${c.instanceType} ${c.instanceSize}`), h("div", { class: "muted" }, c.architecture || "")),
            h("td", {}, `${vendor.name} / ${region.name}`),
            h("td", {}, c.numAccelerators ? `${c.numAccelerators} × ${c.accelerator}${c.gpuMemoryGb ? ` (${c.gpuMemoryGb} GB)` : ""}`
              : c.accelerator),
            h("td", {}, `${c.numCpus} vCPU · ${c.memoryGb} GB`),
            h("td", {}, c.pricePerHour != null ? `$${Number(c.pricePerHour).toFixed(2)}` : "—"),
            h("td", {}, h("span", { class: `availability availability-${/^[a-z_]+$/.test(c.status) ? c.status : "unknown"}` },
              String(c.status || "").replace(/_/g, " "))),
            h("td", {}, c.numAccelerators ? [h("meter", { min: "0", max: String(quota.maxAccelerators || 0),
              value: String(quota.usedAccelerators || 0), "aria-label": `${c.instanceType} accelerators used` }),
            ` ${quota.usedAccelerators || 0} / ${quota.maxAccelerators || 0}`] : h("span", { class: "muted" }, "—"))));
        }
      }
    }
    const inUse = [...byType.entries()].filter(([, q]) => q.used > 0);
    replace(summary, inUse.length ? `Accelerators in use: ${inUse.map(([t, q]) => `${t} ${q.used} of ${q.max}`).join(", ")}.`
      : "No accelerators in use.");
    const m = catalog.machine;
    replace(machine, m ? `This machine: ${m.description || m.name || ""}` : "");
    replace(tbody, rows);
    error.textContent = "";
    main.dataset.loaded = "true";
  };
  nsSelect.addEventListener("change", () => load().catch((err) => { error.textContent = String(err.message || err); }));
  poll(load, POLL_MS, ctx.signal);
}
