// @ts-check
/**
 * The create form (`/ui/new`). Hardware comes from the catalog (`GET /v2/provider/<ns>`: instance types with their
 * live status, quota and price); the form builds the same v2 body as the CLI's and the SDK's builder
 * (`controlplane/bodies.py`: every key huggingface_hub always sends, optional ones only when given) and POSTs it.
 * The API decides what is valid: its 4xx `{"error", "param"}` lands next to the field that `param` names. Secrets
 * are write-only: typed into password fields, sent once, cleared, and never read back (the API never returns them).
 */
import { ApiError, endpointPage, endpointPath, get, post } from "../api.js";
import { field, h, replace } from "../dom.js";
import { linkStylesheet } from "../live.js";

/** Image variants the form offers: wire key → label. */
const IMAGES = [["huggingface", "Bundled runtime (endpointctl)"], ["tgi", "Text Generation Inference"],
  ["vLLM", "vLLM"], ["custom", "Custom container"]];
const TYPES = [["authenticated", "Protected: any token of the namespace"], ["public", "Public: no token needed"],
  ["private", "Private: from inside the cluster/host only"]];
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/**
 * `KEY=VALUE` lines → object; blank lines and `#` comments are skipped.
 * @param {string} text @returns {Record<string, string>}
 */
export function parseEnv(text) {
  /** @type {Record<string, string>} */
  const env = {};
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const at = line.indexOf("=");
    if (at <= 0) throw new ApiError(400, `line ${i + 1}: write KEY=VALUE`, "model.env");
    env[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return env;
}

/**
 * The v2 create body (the rules of `controlplane/bodies.py` `create_body`).
 * @param {{name: string, repository: string, revision: string, task: string, compute: any, vendor: string,
 *   region: string, image: string, imageUrl: string, imagePort: string, minReplica: number, maxReplica: number,
 *   scaleToZero: string, env: Record<string, string>, secrets: Record<string, string>, type: string}} f
 */
export function createBody(f) {
  /** @type {any} */
  let image = { [f.image]: {} };
  if (f.image === "custom") {
    image = { custom: { url: f.imageUrl.trim() } };
    if (f.imagePort.trim()) image.custom.port = Number(f.imagePort);
  }
  /** @type {any} */
  const model = { repository: f.repository.trim(), revision: f.revision.trim() || null, framework: "pytorch", image };
  if (f.task.trim()) model.task = f.task.trim();
  if (Object.keys(f.env).length) model.env = f.env;
  if (Object.keys(f.secrets).length) model.secrets = f.secrets;
  return {
    name: f.name.trim(),
    type: f.type,
    compute: {
      accelerator: f.compute.accelerator, instanceType: f.compute.instanceType, instanceSize: f.compute.instanceSize,
      scaling: { minReplica: f.minReplica, maxReplica: f.maxReplica,
        scaleToZeroTimeout: f.scaleToZero.trim() === "" ? null : Number(f.scaleToZero) },
    },
    model,
    provider: { vendor: f.vendor, region: f.region },
  };
}

/** @param {any} c one catalog compute */
function computeLabel(c) {
  const kind = c.accelerator === "gpu" ? `${c.numAccelerators} × GPU ${c.gpuMemoryGb ?? "?"} GB` : "CPU";
  const quota = c.quota ? ` · ${c.quota.usedAccelerators}/${c.quota.maxAccelerators} accelerators used` : "";
  return `${c.instanceType} ${c.instanceSize} · ${kind} · ${c.numCpus} vCPU, ${c.memoryGb} GB · ` +
    `$${Number(c.pricePerHour).toFixed(2)}/h · ${c.status}${quota}`;
}

/**
 * @param {HTMLElement} main
 * @param {{session: {name: string, namespaces: string[], isAdmin: boolean}, signal: AbortSignal}} ctx
 */
export async function render(main, ctx) {
  linkStylesheet("/ui/static/live.css");
  const namespaces = ctx.session.namespaces && ctx.session.namespaces.length ? ctx.session.namespaces
    : [ctx.session.name];
  const ns = h("input", { id: "f-namespace", name: "namespace", required: true, list: "namespaces",
    value: namespaces[0], dataset: { param: "namespace" }, autocomplete: "off" });
  const nsList = h("datalist", { id: "namespaces" }, namespaces.map((n) => h("option", { value: n })));
  const name = h("input", { id: "f-name", name: "name", required: true, maxlength: 32, dataset: { param: "name" },
    placeholder: "my-endpoint", autocomplete: "off", pattern: NAME_RE.source });
  const repository = h("input", { id: "f-repository", required: true, dataset: { param: "model.repository" },
    placeholder: "HuggingFaceTB/SmolLM2-135M-Instruct or a local path", autocomplete: "off" });
  const revision = h("input", { id: "f-revision", dataset: { param: "model.revision" }, placeholder: "main",
    autocomplete: "off" });
  const task = h("input", { id: "f-task", dataset: { param: "model.task" }, value: "text-generation" });
  const hardware = h("select", { id: "f-hardware", required: true,
    dataset: { param: "compute.instanceType", params: "compute provider" } });
  const image = h("select", { id: "f-image", dataset: { param: "model.image" } },
    IMAGES.map(([v, label]) => h("option", { value: v }, label)));
  const imageUrl = h("input", { id: "f-image-url", dataset: { param: "model.image.custom.url" },
    placeholder: "ghcr.io/org/server:1.0", autocomplete: "off" });
  const imagePort = h("input", { id: "f-image-port", type: "number", min: 1, max: 65535, value: "80",
    dataset: { param: "model.image.custom.port" } });
  const customBox = h("div", { class: "custom-image", id: "custom-image", hidden: true },
    field("Image URL", imageUrl), field("Port", imagePort));
  const minReplica = h("input", { id: "f-min", type: "number", min: 0, value: "1",
    dataset: { param: "compute.scaling.minReplica" } });
  const maxReplica = h("input", { id: "f-max", type: "number", min: 1, value: "1",
    dataset: { param: "compute.scaling.maxReplica" } });
  const scaleToZero = h("input", { id: "f-scale-to-zero", type: "number", min: 1, placeholder: "never",
    dataset: { param: "compute.scaling.scaleToZeroTimeout" } });
  const env = h("textarea", { id: "f-env", rows: 3, class: "mono", dataset: { param: "model.env" },
    placeholder: "MAX_TOTAL_TOKENS=2048" });
  const secretsBox = h("div", { id: "f-secrets", class: "secrets", dataset: { param: "model.secrets" }, tabindex: -1 });
  const type = h("select", { id: "f-type", dataset: { param: "type" } },
    TYPES.map(([v, label]) => h("option", { value: v }, label)));
  const formError = h("div", { class: "error", id: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", id: "create" }, "Create endpoint");

  const addSecret = () => {
    const key = h("input", { class: "secret-name mono", placeholder: "NAME", "aria-label": "Secret name",
      autocomplete: "off" });
    const value = h("input", { class: "secret-value", type: "password", placeholder: "value",
      "aria-label": "Secret value", autocomplete: "new-password" });
    const row = h("div", { class: "secret-row" }, key, value,
      h("button", { type: "button", class: "remove", onclick: () => row.remove(), "aria-label": "Remove secret" },
        "Remove"));
    secretsBox.appendChild(row);
    key.focus();
  };
  image.addEventListener("change", () => { customBox.hidden = /** @type {HTMLSelectElement} */ (image).value !== "custom"; });

  const form = h("form", { id: "create-form", class: "card create", novalidate: true },
    h("fieldset", {}, h("legend", {}, "Endpoint"),
      field("Namespace", ns), nsList,
      field("Name", name, "lowercase letters, digits and '-', at most 32"),
      field("Type", type)),
    h("fieldset", {}, h("legend", {}, "Model"),
      field("Repository", repository), field("Revision", revision, "a branch, tag or commit; empty: the default"),
      field("Task", task), field("Image", image), customBox),
    h("fieldset", {}, h("legend", {}, "Hardware and scaling"),
      field("Instance", hardware, "live status and quota from the hardware catalog"),
      h("div", { class: "row" }, field("Min replicas", minReplica), field("Max replicas", maxReplica),
        field("Scale to zero after (minutes)", scaleToZero, "empty: never; needs min replicas 0"))),
    h("fieldset", {}, h("legend", {}, "Environment"),
      field("Environment variables", env, "one KEY=VALUE a line"),
      h("div", { class: "field" }, h("label", { for: "f-secrets" }, "Secrets"), secretsBox,
        h("button", { type: "button", id: "add-secret", onclick: addSecret }, "Add secret"),
        h("div", { class: "muted" }, "write-only: sent once, never shown again"),
        h("div", { class: "error", id: "f-secrets-error", role: "alert" }))),
    formError,
    h("div", { class: "actions" }, submit));

  replace(main, h("h1", {}, "New endpoint"), form);

  /** @type {any[]} */
  let computes = [];
  const loadCatalog = async () => {
    const target = /** @type {HTMLInputElement} */ (ns).value.trim() || namespaces[0];
    const catalog = await get(`/v2/provider/${encodeURIComponent(target)}`, { signal: ctx.signal });
    computes = [];
    for (const vendor of catalog.vendors || []) {
      for (const region of vendor.regions || []) {
        for (const c of region.computes || []) computes.push({ ...c, vendor: vendor.name, region: region.name });
      }
    }
    const select = /** @type {HTMLSelectElement} */ (hardware);
    const previous = select.selectedOptions.length ? select.selectedOptions[0].dataset.id : undefined;
    replace(hardware, computes.map((c, i) => h("option", { value: String(i), disabled: c.status !== "available",
      dataset: { id: c.id } }, `${c.vendor}/${c.region} · ${computeLabel(c)}`)));
    const keep = computes.findIndex((c) => c.id === previous && c.status === "available");
    const first = keep >= 0 ? keep : computes.findIndex((c) => c.status === "available");
    if (first >= 0) select.value = String(first);
  };
  ns.addEventListener("change", () => loadCatalog().catch((err) => placeError(form, err, formError)));
  await loadCatalog().catch((err) => placeError(form, err, formError));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    submit.setAttribute("disabled", "");
    try {
      const namespace = /** @type {HTMLInputElement} */ (ns).value.trim();
      const chosen = computes[Number(/** @type {HTMLSelectElement} */ (hardware).value)];
      if (!chosen) throw new ApiError(400, "choose an instance type", "compute.instanceType");
      /** @type {Record<string, string>} */
      const secrets = {};
      for (const row of secretsBox.querySelectorAll(".secret-row")) {
        const key = /** @type {HTMLInputElement} */ (row.querySelector(".secret-name")).value.trim();
        const value = /** @type {HTMLInputElement} */ (row.querySelector(".secret-value")).value;
        if (key) secrets[key] = value;
      }
      const value = (/** @type {HTMLElement} */ el) => /** @type {HTMLInputElement} */ (el).value;
      const body = createBody({
        name: value(name), repository: value(repository), revision: value(revision), task: value(task),
        compute: chosen, vendor: chosen.vendor, region: chosen.region, image: value(image),
        imageUrl: value(imageUrl), imagePort: value(imagePort), minReplica: Number(value(minReplica)),
        maxReplica: Number(value(maxReplica)), scaleToZero: value(scaleToZero), env: parseEnv(value(env)), secrets,
        type: value(type),
      });
      await post(endpointPath(namespace), body);
      for (const input of secretsBox.querySelectorAll("input")) /** @type {HTMLInputElement} */ (input).value = "";
      location.assign(endpointPage(namespace, body.name));
    } catch (err) {
      placeError(form, err, formError);
    } finally {
      submit.removeAttribute("disabled");
    }
  });
}

/** @param {HTMLElement} form */
function clearErrors(form) {
  for (const el of form.querySelectorAll(".error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/**
 * Put an error next to the control its `param` names: the control whose `data-param` is the param or its longest
 * prefix (`model.env.FOO` → the env field), or one that lists the param's first segment in `data-params`
 * (`provider.region` → the instance select). A 422 from request parsing names its field in the message instead.
 * @param {HTMLElement} form @param {any} err @param {HTMLElement} fallback
 */
export function placeError(form, err, fallback) {
  clearErrors(form);
  const message = err && err.message ? String(err.message) : String(err);
  let param = err && err.param ? String(err.param) : "";
  if (!param) {
    const match = /^invalid request: ([A-Za-z0-9_.]+): /.exec(message);
    if (match) param = match[1];
  }
  /** @type {HTMLElement | null} */
  let target = null;
  let best = -1;
  for (const el of form.querySelectorAll("[data-param]")) {
    const own = /** @type {HTMLElement} */ (el).dataset.param || "";
    const extra = (/** @type {HTMLElement} */ (el).dataset.params || "").split(" ").filter(Boolean);
    const fits = param === own || param.startsWith(`${own}.`) ? own.length
      : extra.some((p) => param === p || param.startsWith(`${p}.`)) ? 0 : -1;
    if (fits > best) { best = fits; target = /** @type {HTMLElement} */ (el); }
  }
  const box = target ? document.getElementById(`${target.id}-error`) : null;
  (box || fallback).textContent = message;
  if (target && box) {
    target.setAttribute("aria-invalid", "true");
    const customBox = target.closest(".custom-image");
    if (customBox instanceof HTMLElement) customBox.hidden = false;
    target.focus();
  }
}
