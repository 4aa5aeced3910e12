// Live traffic: requests and errors per second for each upstream across
// the fleet. The control plane keeps only each node's latest report, so the
// dashboard samples /traffic on every refresh (whatever page is open) and
// draws the last few minutes of samples as sparklines.

import { api } from "./api.js";
import { h, svg, replace, table, badge } from "./dom.js";

export const title = "Traffic";

// Two minutes at the dashboard's refresh interval.
const MAX_SAMPLES = 40;
const W = 260;
const H = 40;

/** name -> [{t, rps, eps}], oldest first. */
const series = new Map();
let latest = null;

/** Takes one sample of /traffic. */
export async function sample() {
  latest = await api("/traffic");
  const t = Date.parse(latest.at) || Date.now();
  for (const u of latest.upstreams) {
    const s = series.get(u.name) ?? [];
    s.push({ t, rps: u.requests_per_second, eps: u.errors_per_second });
    if (s.length > MAX_SAMPLES) s.splice(0, s.length - MAX_SAMPLES);
    series.set(u.name, s);
  }
}

function points(values, max) {
  const step = W / (MAX_SAMPLES - 1);
  const x0 = W - (values.length - 1) * step;
  return values
    .map((v, i) => `${(x0 + i * step).toFixed(1)},${(H - 1 - (v / max) * (H - 4)).toFixed(1)}`)
    .join(" ");
}

function sparkline(samples) {
  const rps = samples.map((s) => s.rps);
  const eps = samples.map((s) => s.eps);
  const max = Math.max(1, ...rps, ...eps);
  const children = [svg("line", { x1: 0, y1: H - 1, x2: W, y2: H - 1, class: "axis" })];
  if (samples.length > 1) {
    const line = points(rps, max);
    const first = line.split(" ")[0].split(",")[0];
    children.push(svg("polygon", { points: `${first},${H - 1} ${line} ${W},${H - 1}`, class: "area" }));
    children.push(svg("polyline", { points: line, class: "requests" }));
    children.push(svg("polyline", { points: points(eps, max), class: "errors" }));
  }
  return svg(
    "svg",
    { class: "spark", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": `last ${samples.length} samples, peak ${max.toFixed(1)} requests/s` },
    svg("title", null, `peak ${max.toFixed(1)}/s over the last ${samples.length} samples`),
    children,
  );
}

const rate = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

function row(u) {
  const share = u.requests_per_second > 0 ? (100 * u.errors_per_second) / u.requests_per_second : 0;
  const kind = share >= 5 ? "bad" : share > 0 ? "warn" : "ok";
  return h(
    "tr",
    { dataset: { upstream: u.name } },
    h("td", null, h("strong", null, u.name), u.configured ? null : h("span", { class: "muted" }, " (no longer configured)")),
    h("td", { class: "num rps" }, rate(u.requests_per_second)),
    h("td", { class: "num eps" }, rate(u.errors_per_second)),
    h("td", null, badge(`${share.toFixed(1)} %`, kind)),
    h("td", { class: "num" }, u.requests_per_second > 0 ? `${u.mean_ms.toFixed(1)} ms` : "–"),
    h("td", { class: "num" }, u.nodes),
    h("td", null, sparkline(series.get(u.name) ?? [])),
  );
}

export function mount(el) {
  const info = h("p", { class: "muted" });
  const body = h("div", { class: "table-wrap" });
  const legend = h(
    "p",
    { class: "legend muted" },
    h("span", { class: "key key-requests" }),
    " requests/s   ",
    h("span", { class: "key key-errors" }),
    " errors/s (5xx) — one point per refresh, newest on the right",
  );
  replace(el, h("h1", null, "Traffic"), info, body, legend);
  return {
    async refresh() {
      if (!latest) await sample();
      const { nodes } = latest;
      replace(
        info,
        `Summed over the latest report of ${nodes.reporting} of ${nodes.connected} connected nodes. `,
        nodes.reporting < nodes.connected ? badge(`${nodes.connected - nodes.reporting} not reporting`, "warn") : null,
      );
      replace(
        body,
        table(
          { id: "traffic" },
          ["Upstream", "Requests/s", "Errors/s", "Error rate", "Mean latency", "Nodes", "Recent"],
          latest.upstreams.map(row),
          "No upstreams.",
        ),
      );
    },
  };
}
