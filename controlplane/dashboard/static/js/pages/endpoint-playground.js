// @ts-check
/**
 * The playground (`/ui/endpoints/<ns>/<name>/playground`): chat with the endpoint through the gateway, as any client
 * would, signed in by the session cookie (the CSRF header rides on the POST). Replies stream token by token: the
 * response body is read as server-sent events with a ReadableStream reader and each delta is appended as text, so
 * model output is shown, never parsed as HTML.
 *
 * A scaled-to-zero endpoint wakes on the request itself: the gateway holds it (up to `X-Scale-Up-Timeout`) until a
 * replica is ready and sends nothing meanwhile, so the page watches the endpoint's state and says it is waking until
 * the first byte comes. A paused endpoint is refused by the gateway with a 503 whose message is shown as is.
 *
 * Beside the chat, the same request as code for the OpenAI SDK, huggingface_hub's InferenceClient and curl, with the
 * endpoint's URL and the token read from the environment (the page never holds a token).
 */
import { endpointPage, endpointPath, get, request } from "../api.js";
import { copyButton, h, replace, stateBadge } from "../dom.js";
import { linkStylesheet } from "../live.js";

const WAKE_TIMEOUT_S = 600;
const TOOL = {
  type: "function",
  function: {
    name: "get_weather", description: "Current weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

/** A JSON value written as a Python literal. @param {any} v @returns {string} */
export function py(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number" || typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(py).join(", ")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${py(x)}`).join(", ")}}`;
}

/** A string inside single quotes for a POSIX shell. @param {string} s */
const shellQuote = (s) => `'${s.replace(/'/g, "'\\''")}'`;

/**
 * The three snippets for a chat request.
 * @param {string} url the endpoint's base URL @param {any} body an OpenAI chat-completions body (stream: true)
 */
export function snippets(url, body) {
  const extra = Object.entries(body).filter(([k]) => !["model", "messages", "stream"].includes(k));
  const kwargs = extra.map(([k, v]) => `    ${k}=${py(v)},\n`).join("");
  const openai = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=${py(`${url}/v1/`)}, ` +
    `api_key=os.environ["ENDPOINTCTL_TOKEN"])\nstream = client.chat.completions.create(\n    model=${py(body.model)},\n` +
    `    messages=${py(body.messages)},\n${kwargs}    stream=True,\n)\nfor chunk in stream:\n` +
    `    print(chunk.choices[0].delta.content or "", end="")\n`;
  const hub = `import os\nfrom huggingface_hub import InferenceClient\n\nclient = InferenceClient(base_url=${py(url)}, ` +
    `api_key=os.environ["ENDPOINTCTL_TOKEN"])\nfor chunk in client.chat_completion(\n    messages=${py(body.messages)},\n` +
    `${kwargs}    stream=True,\n):\n    print(chunk.choices[0].delta.content or "", end="")\n`;
  const curl = `curl ${shellQuote(`${url}/v1/chat/completions`)} \\\n  -H "Authorization: Bearer $ENDPOINTCTL_TOKEN" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d ${shellQuote(JSON.stringify(body))}\n`;
  return { openai, hub, curl };
}

/**
 * Server-sent events from a fetch body, one parsed `data:` payload at a time (`[DONE]` ends the stream).
 * @param {ReadableStream<Uint8Array>} stream @returns {AsyncGenerator<any>}
 */
export async function* events(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value, { stream: !done });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * @param {HTMLElement} main
 * @param {{params: {namespace: string, name: string}, signal: AbortSignal}} ctx
 */
export async function render(main, ctx) {
  linkStylesheet("/ui/static/live.css");
  const { namespace, name } = ctx.params;
  let endpoint = await get(endpointPath(namespace, name), { signal: ctx.signal });
  const url = endpoint.status && endpoint.status.url ? String(endpoint.status.url).replace(/\/$/, "")
    : `${location.origin}/endpoints/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
  const gatewayPath = `/endpoints/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/v1/chat/completions`;

  const badge = h("span", { id: "endpoint-state" }, stateBadge(endpoint.status.state));
  const system = h("textarea", { id: "pg-system", rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = h("input", { id: "pg-temperature", type: "number", min: 0, max: 2, step: 0.1, value: "0.7" });
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, max: 4096, value: "256" });
  const jsonMode = h("input", { id: "pg-json", type: "checkbox" });
  const tools = h("input", { id: "pg-tools", type: "checkbox" });
  const transcript = h("ol", { id: "transcript", class: "transcript", "aria-live": "polite" });
  const input = h("textarea", { id: "pg-input", rows: 3, placeholder: "Say something…", required: true });
  const send = h("button", { type: "submit", class: "primary", id: "pg-send" }, "Send");
  const stop = h("button", { type: "button", id: "pg-stop", disabled: true }, "Stop");
  const clear = h("button", { type: "button", id: "pg-clear" }, "Clear");
  const notice = h("div", { id: "pg-notice", class: "notice", role: "status", hidden: true });
  const error = h("div", { id: "pg-error", class: "error", role: "alert" });
  const code = h("div", { id: "pg-code", class: "code-tabs" });

  /** @type {{role: string, content: string}[]} */
  let history = [];
  const label = (/** @type {string} */ text, /** @type {HTMLElement} */ control) =>
    h("div", { class: "field" }, h("label", { for: control.id }, text), control);
  const check = (/** @type {string} */ text, /** @type {HTMLElement} */ control) =>
    h("label", { class: "check", for: control.id }, control, ` ${text}`);

  /** The request body for `messages` with the current settings. @param {{role: string, content: string}[]} messages */
  const body = (messages) => {
    const sys = /** @type {HTMLTextAreaElement} */ (system).value.trim();
    /** @type {any} */
    const b = { model: "tgi", messages: sys ? [{ role: "system", content: sys }, ...messages] : messages,
      temperature: Number(/** @type {HTMLInputElement} */ (temperature).value),
      max_tokens: Number(/** @type {HTMLInputElement} */ (maxTokens).value), stream: true };
    if (/** @type {HTMLInputElement} */ (jsonMode).checked) b.response_format = { type: "json_object" };
    if (/** @type {HTMLInputElement} */ (tools).checked) { b.tools = [TOOL]; b.tool_choice = "auto"; }
    return b;
  };

  const showCode = () => {
    const sample = [...history, { role: "user", content: /** @type {HTMLTextAreaElement} */ (input).value || "Hello!" }];
    const texts = snippets(url, body(sample));
    replace(code, ...[["openai", "OpenAI SDK (Python)"], ["hub", "huggingface_hub InferenceClient"], ["curl", "curl"]]
      .map(([key, title]) => h("section", { class: "snippet", id: `code-${key}` },
        h("div", { class: "snippet-head" }, h("h3", {}, title), copyButton(/** @type {any} */ (texts)[key], "Copy")),
        h("pre", { class: "mono" }, h("code", {}, /** @type {any} */ (texts)[key])))));
  };
  for (const el of [system, temperature, maxTokens, jsonMode, tools, input]) el.addEventListener("input", showCode);
  for (const el of [jsonMode, tools]) el.addEventListener("change", showCode);

  const bubble = (/** @type {string} */ role, /** @type {string} */ text) => {
    const content = h("div", { class: "content" }, text);
    const item = h("li", { class: `msg msg-${role}` }, h("div", { class: "role" }, role), content);
    transcript.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return content;
  };

  /** While the gateway holds the request, say what the endpoint is doing. @param {AbortSignal} signal */
  const watchWake = async (signal) => {
    for (;;) {
      try {
        endpoint = await get(endpointPath(namespace, name), { signal });
      } catch {
        return;
      }
      if (signal.aborted) return;
      replace(badge, stateBadge(endpoint.status.state));
      const state = endpoint.status.state;
      if (state !== "running") {
        notice.hidden = false;
        notice.textContent = state === "scaledToZero" || state === "initializing" || state === "pending"
          ? `The endpoint was scaled to zero and is waking up (${state}); your message is held until a replica is ready.`
          : `The endpoint is ${state}; waiting for a replica…`;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (signal.aborted) return;
    }
  };

  /** @type {AbortController | null} */
  let running = null;
  const form = h("form", { id: "pg-form", class: "composer" }, label("Message (Enter sends, Shift+Enter: new line)", input),
    h("div", { class: "actions" }, send, stop, clear));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = /** @type {HTMLTextAreaElement} */ (input).value.trim();
    if (!text || running) return;
    error.textContent = "";
    const asked = [...history, { role: "user", content: text }];
    bubble("user", text);
    /** @type {HTMLTextAreaElement} */ (input).value = "";
    const out = bubble("assistant", "");
    out.classList.add("streaming");
    running = new AbortController();
    const waiting = new AbortController();
    const stopAll = () => { running && running.abort(); waiting.abort(); };
    ctx.signal.addEventListener("abort", stopAll);
    send.setAttribute("disabled", "");
    stop.removeAttribute("disabled");
    if (endpoint.status.state !== "running") {
      notice.hidden = false;
      notice.textContent = "Waking the endpoint up: your message is held until a replica is ready.";
    }
    watchWake(waiting.signal);
    let reply = "";
    /** @type {{name: string, args: string}[]} */
    const calls = [];
    try {
      const response = await request("POST", gatewayPath, { body: body(asked), raw: true, signal: running.signal,
        headers: { Accept: "text/event-stream", "X-Scale-Up-Timeout": String(WAKE_TIMEOUT_S) } });
      waiting.abort();
      notice.hidden = true;
      replace(badge, stateBadge("running"));
      endpoint.status.state = "running";
      for await (const chunk of events(response.body)) {
        if (chunk.error) throw new Error(typeof chunk.error === "string" ? chunk.error : chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) continue;
        if (delta.content) reply += delta.content;
        for (const call of delta.tool_calls || []) {
          const fn = call.function || {};
          const at = Number(call.index) || 0;
          calls[at] = { name: (calls[at] ? calls[at].name : "") + (fn.name || ""),
            args: (calls[at] ? calls[at].args : "") + (fn.arguments || "") };
        }
        out.textContent = [reply, ...calls.map((c) => `→ tool call ${c.name}(${c.args})`)].filter(Boolean).join("\n");
      }
      history = [...asked, { role: "assistant", content: reply }];
    } catch (err) {
      const aborted = running && running.signal.aborted;
      error.textContent = aborted ? "Stopped." : `The endpoint refused the request: ${err && err.message ? err.message : err}`;
      if (!aborted) out.closest("li")?.classList.add("failed");
      notice.hidden = true;
    } finally {
      waiting.abort();
      ctx.signal.removeEventListener("abort", stopAll);
      out.classList.remove("streaming");
      running = null;
      send.removeAttribute("disabled");
      stop.setAttribute("disabled", "");
      showCode();
    }
  });
  input.addEventListener("keydown", (event) => {
    const key = /** @type {KeyboardEvent} */ (event);
    if (key.key === "Enter" && !key.shiftKey && !key.isComposing) { // Shift+Enter: a new line
      key.preventDefault();
      /** @type {HTMLFormElement} */ (form).requestSubmit();
    }
  });
  stop.addEventListener("click", () => running && running.abort());
  clear.addEventListener("click", () => { history = []; transcript.replaceChildren(); error.textContent = ""; showCode(); });

  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, `Playground · ${namespace}/${name}`), badge,
      h("a", { href: endpointPage(namespace, name), id: "back-to-endpoint" }, "Endpoint page")),
    h("div", { class: "playground" },
      h("div", { class: "card chat" }, notice, transcript, error, form),
      h("aside", { class: "card settings", "aria-label": "Settings" },
        label("System prompt", system), label("Temperature", temperature), label("Max tokens", maxTokens),
        check("JSON mode", jsonMode), check("Tools (a sample get_weather function)", tools))),
    h("h2", {}, "The same request as code"),
    h("p", { class: "muted" }, "Set ENDPOINTCTL_TOKEN to a token of the namespace (public endpoints need none)."),
    code);
  showCode();
}
