// @ts-check
/**
 * Tokens: mint (the plain value is shown once, here, and never again), list, revoke. A token acts as one user
 * namespace plus its organisations; only the admin names another user's namespace or adds organisations.
 */
import { ApiError, del, get, post } from "../api.js";
import { copyButton, field, h, replace, showError, timeElement } from "../dom.js";

/** @param {HTMLElement} main @param {{session: any, signal: AbortSignal}} ctx */
export function render(main, ctx) {
  const admin = Boolean(ctx.session.isAdmin);
  const nameInput = /** @type {HTMLInputElement} */ (h("input", { type: "text", id: "token-name", required: true,
    maxlength: "128", value: "dashboard", "data-param": "name" }));
  const nsInput = /** @type {HTMLInputElement} */ (h("input", { type: "text", id: "token-namespace",
    value: ctx.session.name, readonly: !admin, "data-param": "namespace" }));
  const orgsInput = /** @type {HTMLInputElement} */ (h("input", { type: "text", id: "token-orgs", "data-param": "orgs",
    placeholder: "acme, research" }));
  const formError = h("p", { class: "error", role: "alert" });
  const created = h("div", { id: "token-created", "aria-live": "polite" });
  const form = /** @type {HTMLFormElement} */ (h("form", { class: "card", id: "token-form", novalidate: true },
    h("h2", {}, "New token"),
    field("Name", nameInput),
    field("Namespace (the user it acts as)", nsInput, admin ? "Any user namespace; it is created if missing."
      : "Your own namespace: only the admin mints tokens for others."),
    admin ? field("Organisations (admin only)", orgsInput, "Comma-separated; the user becomes a member of each.")
      : null,
    formError,
    h("button", { type: "submit", class: "primary" }, "Create token")));
  const tbody = h("tbody", { id: "tokens-body" });
  const listError = h("p", { class: "error", role: "alert" });

  const load = async () => {
    const page = await get("/api/tokens", { signal: ctx.signal });
    replace(tbody, page.items.map((/** @type {any} */ t) => h("tr", { dataset: { tokenId: String(t.id) } },
      h("td", {}, t.name), h("td", {}, t.namespace), h("td", { class: "mono" }, `${t.prefix}…`),
      h("td", {}, timeElement(t.createdAt)), h("td", {}, t.lastUsedAt ? timeElement(t.lastUsedAt) : "never"),
      h("td", {}, t.revoked ? h("span", { class: "muted" }, "revoked")
        : h("button", { type: "button", class: "danger revoke", "aria-label": `Revoke token ${t.name} (${t.prefix}…)`,
          onclick: async (/** @type {Event} */ event) => {
            const button = /** @type {HTMLButtonElement} */ (event.currentTarget);
            button.disabled = true;
            button.textContent = "Revoking…";
            try {
              await del(`/api/tokens/${encodeURIComponent(t.id)}`);
            } catch (err) {
              if (!(err instanceof ApiError && err.status === 401)) listError.textContent = String(/** @type {any} */ (err).message);
            }
            await load().catch(() => {});
          } }, "Revoke")))));
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(created);
    const orgs = admin ? orgsInput.value.split(",").map((s) => s.trim()).filter(Boolean) : [];
    try {
      const token = await post("/api/tokens", { name: nameInput.value, namespace: nsInput.value || null,
        orgs: orgs.length ? orgs : null });
      const value = h("code", { class: "mono", id: "new-token-value" }, token.token);
      replace(created, h("div", { class: "secret", role: "status" },
        h("p", {}, h("strong", {}, "Copy this token now: it is shown only once."), ` It acts as ${token.namespace}.`),
        h("p", {}, value, " ", copyButton(token.token, "Copy token"))));
      showError(form, "", formError);
      formError.textContent = "";
      await load();
    } catch (err) {
      showError(form, err, formError);
    }
  });

  replace(main, h("h1", {}, "Tokens"), form, created,
    h("section", { "aria-labelledby": "h-tokens" }, h("h2", { id: "h-tokens" }, admin ? "All tokens" : "Your tokens"),
      listError,
      h("table", { id: "tokens" }, h("thead", {}, h("tr", {}, ["Name", "Namespace", "Starts with", "Created",
        "Last used", ""].map((t) => h("th", { scope: "col" }, t)))), tbody)));
  load().catch((err) => { listError.textContent = String(err.message || err); });
}
