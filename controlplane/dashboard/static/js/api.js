// @ts-check
/**
 * The dashboard's one way to the public API: same-origin fetches that carry the session cookie and, on unsafe
 * methods, `X-CSRF-Token` (from `GET /api/session`). A 401 means the session is gone (expired, signed out, token
 * revoked): the page goes to sign-in. Errors arrive as `{"error", "param"?}` and are thrown as `ApiError`.
 */

export class ApiError extends Error {
  /** @param {number} status @param {string} message @param {string | undefined} param */
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

/** @typedef {{name: string, namespaces: string[], isAdmin: boolean, csrfToken: string | null}} Session */

/** @type {Promise<Session> | null} */
let sessionPromise = null;

/** Who is signed in (cached for the page's life). @returns {Promise<Session>} */
export function session() {
  if (!sessionPromise) {
    sessionPromise = request("GET", "/api/session");
    sessionPromise.catch(() => { sessionPromise = null; });
  }
  return sessionPromise;
}

/** Go to sign-in, coming back here afterwards (a same-origin path only). */
export function toSignIn() {
  const back = location.pathname + location.search;
  location.assign(`/ui/signin?next=${encodeURIComponent(back)}`);
}

/**
 * @param {string} method
 * @param {string} path an absolute same-origin path (`/v2/...`, `/api/...`, `/endpoints/...`)
 * @param {{body?: any, signal?: AbortSignal, raw?: boolean, headers?: Record<string, string>}} [options]
 *   raw: return the Response (streams, text) instead of parsed JSON
 * @returns {Promise<any>}
 */
export async function request(method, path, options = {}) {
  if (!path.startsWith("/") || path.startsWith("//")) throw new Error("same-origin paths only");
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (!["GET", "HEAD"].includes(method)) {
    const s = path === "/api/session" ? null : await session();
    if (s && s.csrfToken) headers["X-CSRF-Token"] = s.csrfToken;
  }
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  const response = await fetch(path, { method, headers, body, signal: options.signal, credentials: "same-origin",
    redirect: "error", cache: "no-store" });
  if (response.status === 401 && !location.pathname.startsWith("/ui/signin")) {
    toSignIn();
    throw new ApiError(401, "signed out", undefined);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let param;
    try {
      const data = await response.json();
      if (data && typeof data.error === "string") message = data.error;
      else if (data && data.error && typeof data.error.message === "string") message = data.error.message;
      if (data && typeof data.param === "string") param = data.param;
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, message, param);
  }
  if (options.raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (/** @type {string} */ path, /** @type {any} */ options) => request("GET", path, options);
export const post = (/** @type {string} */ path, /** @type {any} */ body) => request("POST", path, { body });
export const put = (/** @type {string} */ path, /** @type {any} */ body) => request("PUT", path, { body });
export const del = (/** @type {string} */ path) => request("DELETE", path);

/** Path segment encoding for namespaces and names. @param {string} ns @param {string} [name] */
export function endpointPath(ns, name) {
  const base = `/v2/endpoint/${encodeURIComponent(ns)}`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

/** The dashboard page of one endpoint. @param {string} ns @param {string} name */
export function endpointPage(ns, name) {
  return `/ui/endpoints/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
}

/** Sign out and go to the sign-in page. */
export async function signOut() {
  const s = await session().catch(() => null);
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin",
    headers: s && s.csrfToken ? { "X-CSRF-Token": s.csrfToken } : {} });
  location.assign("/ui/signin");
}
