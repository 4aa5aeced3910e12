// The fleet: every data plane that ever subscribed, the version it serves,
// how far behind the newest it is, when it was last heard from, and the
// errors of the last version it refused.

import { api } from "./api.js";
import { h, replace, table, badge, age, setAge, changed } from "./dom.js";

export const title = "Fleet";

function drift(node, newest) {
  if (node.version === null || node.version === undefined) return badge("no version yet", "warn");
  const behind = newest - node.version;
  if (behind <= 0) return badge("up to date", "ok");
  return badge(`${behind} behind`, "warn");
}

function nack(node) {
  const n = node.last_nack;
  if (!n) return h("span", { class: "muted" }, "none");
  const resolved = node.version !== null && node.version >= n.version;
  return h(
    "div",
    { class: ["nack", resolved && "resolved"] },
    h("div", null, `Refused version ${n.version}`, resolved ? " (since running a newer one)" : "", n.at ? h("span", { class: "muted" }, " · ", age(n.at)) : null),
    h(
      "ul",
      null,
      (n.errors || []).map((e) => h("li", null, h("code", null, e.path || "(config)"), " ", e.message)),
    ),
  );
}

function labels(node) {
  const entries = Object.entries(node.labels || {});
  return entries.map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
}

function row(node, newest) {
  return h(
    "tr",
    { dataset: { node: node.id }, class: node.connected ? "" : "disconnected" },
    h("td", { class: "nowrap" }, h("strong", null, node.id), h("div", { class: "labels" }, labels(node))),
    h("td", { class: "nowrap" }, node.hostname),
    h("td", null, node.connected ? badge("connected", "ok") : badge("disconnected", "off")),
    h("td", { class: "num version" }, node.version ?? "–"),
    h("td", null, drift(node, newest)),
    h("td", { class: "nowrap seen" }, age(node.last_seen)),
    h("td", null, h("code", null, node.build)),
    h("td", null, nack(node)),
  );
}

function card(label, value, kind) {
  return h("div", { class: ["card", kind && `card-${kind}`] }, h("div", { class: "card-value" }, value), h("div", { class: "card-label" }, label));
}

export function mount(el) {
  const cards = h("div", { class: "cards" });
  const body = h("div", { class: "table-wrap" });
  replace(el, h("h1", null, "Fleet"), cards, body);
  return {
    async refresh() {
      const { version, nodes } = await api("/nodes");
      // Every report moves last_seen: that alone only moves the times.
      const shown = nodes.map(({ last_seen, health, traffic, ...rest }) => rest);
      if (!changed(body, [version, shown])) {
        for (const n of nodes) {
          setAge(body.querySelector(`tr[data-node="${CSS.escape(n.id)}"] td.seen span.age`), n.last_seen);
        }
        return;
      }
      const connected = nodes.filter((n) => n.connected);
      const behind = connected.filter((n) => n.behind);
      const refused = connected.filter((n) => n.last_nack && !(n.version >= n.last_nack.version));
      replace(
        cards,
        card("newest version", version),
        card("connected", `${connected.length} / ${nodes.length}`, connected.length === nodes.length ? "ok" : "warn"),
        card("behind", behind.length, behind.length ? "warn" : "ok"),
        card("refused a version", refused.length, refused.length ? "bad" : "ok"),
      );
      replace(
        body,
        table(
          { id: "nodes" },
          ["Node", "Host", "Stream", "Version", "Drift", "Last seen", "Build", "Last refusal"],
          nodes.map((n) => row(n, version)),
          "No data plane has subscribed yet. Start one with isame-lb --control-plane URL --node-id ID.",
        ),
      );
    },
  };
}
