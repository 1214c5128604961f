// @ts-check
/**
 * The endpoint page's charts: the last hour of `GET /v2/endpoint/<ns>/<name>/metrics` (the worker's samples of the
 * replicas' own metrics) drawn with uPlot, refreshed every few seconds. The route answers aligned columns, which is
 * uPlot's own data shape, so a refresh is one `setData` per chart. A gap (null) is drawn as a gap, never as zero.
 */
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { get } from "./api.js";
import { h, replace } from "./dom.js";
import { linkStylesheet } from "./live.js";

const REFRESH_MS = 5000;
const WINDOW_S = 3600;
const MIN_SPAN_S = 300;

/** Chart id, title, unit and its series: [wire column, label, colour]. */
const CHARTS = [
  ["requests", "Requests per second", "req/s", [["requestsPerSecond", "requests/s", "#2f5bd3"]]],
  ["tokens", "Output tokens per second", "tok/s", [["outputTokensPerSecond", "tokens/s", "#137a3a"]]],
  ["ttft", "Time to first token", "s", [["ttftP50", "p50", "#2f5bd3"], ["ttftP95", "p95", "#b42318"]]],
  ["latency", "Request latency", "s", [["latencyP50", "p50", "#2f5bd3"], ["latencyP95", "p95", "#b42318"]]],
  ["pending", "Pending requests", "", [["pendingRequests", "queued + running", "#a35d00"]]],
  ["replicas", "Replicas", "", [["readyReplicas", "ready", "#137a3a"], ["targetReplicas", "target", "#61646d"]]],
];

/**
 * @param {string} id @param {string} unit @param {Array<[string, string, string]>} series @param {number} width
 * @returns {any} uPlot options
 */
function options(id, unit, series, width) {
  return {
    width, height: 160,
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (/** @type {any} */ _u, /** @type {number} */ min,
      /** @type {number} */ max) => [0, Math.max(max || 0, min || 0, id === "replicas" ? 1 : 0) * 1.1 || 1] } },
    axes: [{}, { label: unit, size: 56 }],
    // uPlot's default points: drawn where samples are sparse, so an isolated percentile (one interval with
    // finished requests between idle ones) is still visible.
    series: [{}, ...series.map(([, label, colour]) => ({ label, stroke: colour, width: 2, spanGaps: false }))],
  };
}

/** How many points of a chart's series hold a value: a test and a reader can tell drawn from empty. */
function measured(/** @type {any[][]} */ data) {
  return data.slice(1).reduce((n, column) => n + column.filter((v) => v !== null && v !== undefined).length, 0);
}

/**
 * Draw the charts into `container` and keep them current until `signal` aborts.
 * @param {HTMLElement} container @param {string} namespace @param {string} name @param {AbortSignal} signal
 */
export function mountCharts(container, namespace, name, signal) {
  linkStylesheet("/ui/static/vendor/uplot/uPlot.min.css");
  linkStylesheet("/ui/static/live.css");
  const status = h("p", { class: "muted", id: "charts-status" }, "Loading metrics…");
  const cells = CHARTS.map(([id, title]) => h("figure", { class: "chart", id: `chart-${id}`, dataset: { points: "0" } },
    h("figcaption", {}, String(title))));
  replace(container, h("div", { class: "charts-head" }, h("h2", {}, "Last hour"), status),
    h("div", { class: "charts-grid" }, cells));
  /** @type {Map<string, any>} */
  const plots = new Map();
  const path = `/v2/endpoint/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/metrics`;

  const width = () => Math.max(260, Math.floor((cells[0].clientWidth || 400) - 8));
  const draw = async () => {
    const body = await get(`${path}?window=${WINDOW_S}`, { signal });
    const s = body.series;
    // The x range ends now and spans the history there is (at least five minutes, at most the hour), so a young
    // endpoint's few minutes are a picture rather than a sliver at the right edge of an empty hour.
    const end = Math.max(Date.now() / 1000, s.t.length ? s.t[s.t.length - 1] + 1 : 0);
    const start = Math.max(end - WINDOW_S, Math.min(end - MIN_SPAN_S, s.t.length ? s.t[0] - 1 : end));
    CHARTS.forEach(([id, , unit, series], i) => {
      const cols = /** @type {Array<[string, string, string]>} */ (series);
      const data = [[start, ...s.t, end], ...cols.map(([key]) => [null, ...s[key], null])];
      let plot = plots.get(String(id));
      if (!plot) {
        plot = new uPlot(options(String(id), String(unit), cols, width()), data, cells[i]);
        plots.set(String(id), plot);
      } else {
        plot.setData(data);
      }
      cells[i].dataset.points = String(measured(data));
    });
    status.textContent = s.t.length ? `sampled every ${body.interval} s` : "no samples yet: the worker samples running endpoints";
  };

  const tick = async () => {
    if (signal.aborted) return;
    try {
      await draw();
    } catch (err) {
      if (!signal.aborted) status.textContent = `metrics unavailable: ${err && err.message ? err.message : err}`;
    }
    if (!signal.aborted) timer = window.setTimeout(tick, REFRESH_MS);
  };
  /** @type {number | undefined} */
  let timer;
  const resize = new ResizeObserver(() => { for (const plot of plots.values()) plot.setSize({ width: width(), height: 160 }); });
  resize.observe(container);
  signal.addEventListener("abort", () => {
    window.clearTimeout(timer);
    resize.disconnect();
    for (const plot of plots.values()) plot.destroy();
  });
  tick();
}
