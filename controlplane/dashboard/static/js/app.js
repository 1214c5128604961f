// @ts-check
/**
 * Entry module of every page: builds the navigation and the signed-in header, then loads `pages/<page>.js` (the
 * page named by the shell) and calls its `render(main, context)`. A page module exports
 * `render(main: HTMLElement, ctx: {session, params, signal}): void | Promise<void>`.
 */
import { session, signOut } from "./api.js";
import { h, replace } from "./dom.js";

const NAV = [["/ui/", "Endpoints", "list"], ["/ui/new", "New endpoint", "new"], ["/ui/tokens", "Tokens", "tokens"],
  ["/ui/hardware", "Hardware", "hardware"]];

/** The path's parameters: `/ui/endpoints/<namespace>/<name>[/<view>]`. */
function params() {
  const parts = location.pathname.split("/").slice(1).map(decodeURIComponent);
  if (parts[1] === "endpoints") return { namespace: parts[2], name: parts[3], view: parts[4] };
  return {};
}

async function main() {
  const page = document.body.dataset.page || "list";
  const mainEl = /** @type {HTMLElement} */ (document.getElementById("main"));
  const controller = new AbortController();
  window.addEventListener("pagehide", () => controller.abort());
  const ctx = { session: /** @type {any} */ (null), params: params(), signal: controller.signal };
  if (page !== "signin") {
    ctx.session = await session();
    const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
    replace(nav, NAV.map(([href, label, p]) => h("a", { href, "aria-current": p === page ? "page" : undefined },
      label)));
    const who = /** @type {HTMLElement} */ (document.getElementById("who"));
    replace(who, h("span", { id: "signed-in-as" }, `${ctx.session.name}${ctx.session.isAdmin ? " (admin)" : ""}`),
      h("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
  }
  const module = await import(`./pages/${page}.js`);
  await module.render(mainEl, ctx);
}

main().catch((err) => {
  if (err && err.status === 401) return; // on its way to sign-in
  console.error(err);
  const mainEl = document.getElementById("main");
  if (mainEl) replace(mainEl, h("p", { class: "error", role: "alert" }, `The page failed to load: ${err.message || err}`));
});
