// @ts-check
/** Sign-in: the token goes in a JSON body to `POST /api/session` (never into a URL); the cookie that comes back is
 * HttpOnly, so this page never holds the token after the request. */
import { ApiError, request } from "../api.js";
import { field, h, replace } from "../dom.js";

/** A `next` that stays inside the dashboard (no open redirect). @param {string | null} next */
function safeNext(next) {
  return next && /^\/ui\/[A-Za-z0-9._~%/-]*$/.test(next) && !next.startsWith("//") ? next : "/ui/";
}

/** @param {HTMLElement} main */
export function render(main) {
  const input = /** @type {HTMLInputElement} */ (h("input", { type: "password", id: "token", name: "token",
    autocomplete: "current-password", required: true, spellcheck: "false", "data-param": "token" }));
  const error = h("p", { class: "error", id: "signin-error", role: "alert" });
  const form = h("form", { class: "card signin", id: "signin-form", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use an endpointctl token (the one the CLI uses: ENDPOINTCTL_TOKEN)."),
    field("Token", input), error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!input.value) {
      error.textContent = "Enter a token.";
      input.focus();
      return;
    }
    try {
      await request("POST", "/api/session", { body: { token: input.value } });
      input.value = "";
      location.assign(safeNext(new URLSearchParams(location.search).get("next")));
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "That token is not valid (unknown, revoked or mistyped)." : String(/** @type {any} */ (err).message || err);
      input.focus();
    }
  });
  replace(main, form);
  input.focus();
}
