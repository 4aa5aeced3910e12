// Upstreams and their backends in the newest config, with the health each
// backend has across the fleet: on how many of the connected nodes that
// report it the backend is healthy.

import { api } from "./api.js";
import { h, replace, table, badge, changed } from "./dom.js";

export const title = "Upstreams";

function health(b, connected) {
  if (!b || b.reporting_nodes === 0) {
    return h("span", { class: "muted" }, connected ? "no node reports it yet" : "no node connected");
  }
  const kind = b.unhealthy_nodes === 0 ? "ok" : b.healthy_nodes === 0 ? "bad" : "warn";
  const missing = connected - b.reporting_nodes;
  return h(
    "span",
    { class: "health" },
    badge(`healthy on ${b.healthy_nodes} of ${b.reporting_nodes} nodes`, kind),
    b.ejected_nodes > 0 ? badge(`ejected on ${b.ejected_nodes}`, "warn") : null,
    b.dns_failing_nodes > 0 ? badge(`DNS failing on ${b.dns_failing_nodes}`, "warn") : null,
    b.endpoints != null ? h("span", { class: "muted endpoints" }, ` · ${b.endpoints} address${b.endpoints === 1 ? "" : "es"}`) : null,
    missing > 0 ? h("span", { class: "muted" }, ` · ${missing} not reporting`) : null,
  );
}

// An upstream's own retry policy, in a few words.
function retries(r) {
  if (!r) return null;
  if (r.enabled === false) return h("span", { class: "muted retry" }, " · no retries");
  const on = (r.retry_on || []).join(", ");
  const perTry = r.per_try_timeout && r.per_try_timeout !== "0s" ? `, ${r.per_try_timeout} a try` : "";
  return h("span", { class: "muted retry" }, ` · retries on ${on}${perTry}`);
}

function upstream(u, seen, connected) {
  const byUrl = new Map((seen?.backends || []).map((b) => [b.url, b]));
  const weighted = ["weighted_round_robin", "consistent_hash"].includes(u.algorithm);
  const hashed = u.algorithm === "consistent_hash";
  return h(
    "section",
    { class: "upstream", dataset: { upstream: u.name } },
    h(
      "h2",
      null,
      u.name,
      " ",
      h("span", { class: "muted algo" }, u.algorithm.replaceAll("_", " ")),
      hashed ? h("span", { class: "muted hash-on" }, " on ", h("code", null, u.hash_on || "client_ip")) : null,
      u.sticky ? h("span", { class: "muted sticky" }, " · sticky cookie ", h("code", null, u.sticky.cookie)) : null,
      u.slow_start ? h("span", { class: "muted slow-start" }, ` · slow start ${u.slow_start}`) : null,
      u.outlier_detection && u.outlier_detection.enabled !== false
        ? h("span", { class: "muted outliers" }, " · outlier detection")
        : null,
      retries(u.retry),
    ),
    table(
      { class: "backends" },
      ["Backend", "Weight", "Drain", "Health across the fleet"],
      u.backends.map((b) =>
        h(
          "tr",
          { dataset: { backend: b.url } },
          h("td", null, h("code", null, b.url)),
          h("td", { class: ["num", !weighted && "muted"], title: weighted ? null : "weights apply under weighted_round_robin and consistent_hash" }, b.weight),
          h("td", null, b.drain ? badge("draining", "warn") : h("span", { class: "muted" }, "no")),
          h("td", null, health(byUrl.get(b.url), connected)),
        ),
      ),
      "No backends.",
    ),
  );
}

export function mount(el) {
  const body = h("div");
  replace(el, h("h1", null, "Upstreams"), body);
  return {
    async refresh() {
      const [list, fleet] = await Promise.all([api("/upstreams"), api("/fleet")]);
      if (!changed(body, [list.upstreams, fleet.upstreams, fleet.nodes.connected])) return;
      const seen = new Map(fleet.upstreams.map((u) => [u.name, u]));
      replace(
        body,
        list.upstreams.length
          ? list.upstreams.map((u) => upstream(u, seen.get(u.name), fleet.nodes.connected))
          : h("p", { class: "empty" }, "The config has no upstreams yet."),
      );
    },
  };
}
