// @ts-check
/**
 * DOM builders. Every piece of text goes in through `textContent` / `createTextNode`, so tenant text (names, env
 * values, log lines, events, model output) is shown, never parsed: there is no HTML sink in the dashboard (a test
 * greps for them).
 */

/** @typedef {string | number | Node | null | undefined | false} Child */

/**
 * Create an element. `attrs` keys: `class`, `text`, `on<event>` (a listener), `dataset`, booleans (set when true),
 * anything else as an attribute (never `style` or `on*` strings: the CSP forbids inline code and style).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = String(value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "style" || key.startsWith("on")) throw new Error(`h(): ${key} is not allowed`);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/**
 * @param {Node} el
 * @param {(Child | Child[])[]} children
 */
export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * Replace an element's children.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Wire state → colour class; an unknown state still renders (as text), in the neutral colour.
 * @param {string} state */
export function stateBadge(state) {
  const safe = /^[A-Za-z]+$/.test(state) ? state : "unknown";
  return h("span", { class: `state state-${safe}`, dataset: { state } }, state);
}

/** @param {string | null | undefined} iso */
export function relativeTime(iso) {
  if (!iso) return "";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const s = Math.round((Date.now() - then) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(then).toISOString().slice(0, 16).replace("T", " ");
}

/** @param {string | null | undefined} iso */
export function timeElement(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, relativeTime(iso));
}

/** Show a short message in the page's status region (read by screen readers).
 * @param {string} message */
export function toast(message) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.add("shown");
  window.clearTimeout(Number(el.dataset.timer || 0));
  el.dataset.timer = String(window.setTimeout(() => el.classList.remove("shown"), 2500));
}

/** A button that copies `text` to the clipboard.
 * @param {string} text @param {string} [label] */
export function copyButton(text, label = "Copy") {
  return h("button", {
    type: "button", class: "copy", "aria-label": `${label}: ${text}`,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        toast("Copied");
      } catch {
        toast("Copy failed: select the text instead");
      }
    },
  }, label);
}

/**
 * Call `fn` now and then every `ms` milliseconds after each call settles (never two at once) until `signal` aborts.
 * @param {() => Promise<void>} fn @param {number} ms @param {AbortSignal} signal
 */
export function poll(fn, ms, signal) {
  /** @type {number | undefined} */
  let timer;
  const tick = async () => {
    if (signal.aborted) return;
    try {
      await fn();
    } catch (err) {
      console.error(err);
    }
    if (!signal.aborted) timer = window.setTimeout(tick, ms);
  };
  signal.addEventListener("abort", () => window.clearTimeout(timer));
  tick();
}

/** A labelled form field: `<div class=field><label for=id>label</label>control<div class=error></div></div>`.
 * @param {string} label @param {HTMLElement} control @param {string} [hint] */
export function field(label, control, hint) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2)}`;
  const error = h("div", { class: "error", id: `${control.id}-error`, role: "alert" });
  control.setAttribute("aria-describedby", error.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control,
    hint ? h("div", { class: "muted" }, hint) : null, error);
}

/** Put an API error next to the control it concerns (by `param`), else into `fallback`.
 * @param {HTMLElement} form @param {any} err @param {HTMLElement} fallback */
export function showError(form, err, fallback) {
  for (const el of form.querySelectorAll(".error")) el.textContent = "";
  const message = err && err.message ? String(err.message) : String(err);
  const param = err && err.param ? String(err.param) : "";
  const target = param ? form.querySelector(`[data-param="${CSS.escape(param)}"]`) : null;
  const box = target ? document.getElementById(`${target.id}-error`) : null;
  (box || fallback).textContent = message;
  if (target instanceof HTMLElement) target.focus();
}
