// Staged rollouts: the newest rollout, or one picked from the recent ones
// (#/rollouts[/N]), with its stages, the figures the gates compared, the
// gate that failed and the timeline; the policy the next commit follows;
// and for admin tokens the operator's actions on the newest rollout
// (pause, resume, promote a stage or all of them, abort).

import { api, ApiError } from "./api.js";
import { h, replace, table, badge, age, when, changed } from "./dom.js";

export const title = "Rollouts";

const LIMIT = 20;

/** Badge kind per rollout state. */
const STATES = {
  running: "info",
  paused: "warn",
  completed: "ok",
  promoted: "ok",
  rolled_back: "bad",
  aborted: "bad",
  superseded: "off",
};

/** Badge kind per stage status. */
const STATUSES = {
  baking: "info",
  waiting_for_traffic: "warn",
  passed: "ok",
  promoted: "ok",
  failed: "bad",
  skipped: "off",
};

/**
 * The operator's actions and the states they apply to. The server has the
 * last word: a rollout that moved on since the page showed it answers 409.
 */
const ACTIONS = [
  { name: "pause", label: "Pause", states: ["running"], kind: "secondary" },
  { name: "resume", label: "Resume", states: ["paused"] },
  { name: "promote", label: "Promote", states: ["running", "paused"], openStage: true },
  {
    name: "promote-all",
    label: "Promote all",
    states: ["running", "paused", "rolled_back", "aborted"],
    kind: "danger",
    confirm: (r) => ({
      title: `Promote version ${r.version} to every node?`,
      text: `Every data plane takes version ${r.version} at once, without the remaining stages and their gates.`,
    }),
  },
  {
    name: "abort",
    label: "Abort",
    states: ["running", "paused"],
    kind: "danger",
    confirm: (r) => ({
      title: `Abort the rollout of version ${r.version}?`,
      text: `Every data plane goes back to version ${r.base}. Version ${r.version} stays the newest, not served, until it is promoted or another version is committed.`,
    }),
  },
];

const words = (s) => String(s).replaceAll("_", " ");
const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;
const pct = (x) => `${(100 * x).toFixed(2)} %`;

function stateBadge(state) {
  const b = badge(words(state), STATES[state]);
  b.dataset.state = state;
  return b;
}

function selector(sel) {
  const entries = Object.entries(sel || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "every node";
}

/** One side of a stage's figures: `{nodes, requests, errors_5xx, rate_5xx, p99_ms}`. */
function side(f) {
  if (!f) return h("span", { class: "muted" }, "–");
  if (!f.requests) return h("span", { class: "muted" }, "no requests yet");
  return h(
    "div",
    { class: "figures" },
    h("div", null, `${plural(f.requests, "request")} on ${plural(f.nodes, "node")}`),
    h("div", { class: f.errors_5xx ? "" : "muted" }, `${f.errors_5xx} 5xx (${pct(f.rate_5xx)})`),
    h("div", { class: "muted" }, f.p99_ms === null || f.p99_ms === undefined ? "p99 –" : `p99 ${f.p99_ms} ms`),
  );
}

/** What the figures say besides the numbers. */
function notes(f) {
  if (!f) return [];
  const out = [f.low_traffic, f.ratios];
  if (f.unanswered?.length) out.push(`not serving it yet: ${f.unanswered.join(", ")}`);
  return out.filter(Boolean).map((n) => h("div", { class: "muted small" }, n));
}

function stageRow(s) {
  const f = s.figures || null;
  return h(
    "tr",
    { dataset: { stage: s.name, status: s.status } },
    h("td", null, h("strong", null, s.name)),
    h("td", { class: "stage-status" }, badge(words(s.status), STATUSES[s.status]), notes(f)),
    h("td", { class: "members" }, s.members.length ? s.members.join(", ") : h("span", { class: "muted" }, "none")),
    h("td", { class: "nowrap" }, age(s.started_at)),
    h("td", { class: "candidate" }, side(f?.candidate)),
    h("td", { class: "baseline" }, side(f?.baseline)),
  );
}

function failure(f) {
  const figures = f.figures && Object.keys(f.figures).length ? f.figures : null;
  return h(
    "div",
    { class: "failure", id: "rollout-failure", dataset: { gate: f.gate } },
    h("h3", null, `Gate ${f.gate} failed in stage ${f.stage}`),
    h("p", null, f.message),
    f.nodes?.length ? h("p", null, "Nodes: ", f.nodes.join(", ")) : null,
    figures ? h("pre", null, JSON.stringify(figures, null, 2)) : null,
  );
}

function onNewVersion(r) {
  if (r.state === "completed" || r.state === "promoted") return "every node";
  if (!r.on_new_version) return h("span", { class: "muted" }, "–");
  return r.on_new_version.length ? r.on_new_version.join(", ") : h("span", { class: "muted" }, "none");
}

function rolloutItem(r, selected) {
  return h(
    "li",
    { dataset: { version: r.version }, class: r.version === selected ? "selected" : "" },
    h(
      "a",
      { href: `#/rollouts/${r.version}` },
      h("div", { class: "line" }, h("strong", null, `Version ${r.version}`), stateBadge(r.state)),
      h(
        "div",
        { class: "muted small" },
        r.base ? `from version ${r.base}` : "nothing before it",
        r.stage ? ` · stage ${r.stage}` : "",
        " · ",
        age(r.created_at),
      ),
    ),
  );
}

function policyView(p) {
  if (!p.policy) {
    return [
      h("p", { class: "muted" }, "No rollout policy: each committed version goes to every node at once."),
      p.revision ? h("p", { class: "muted small" }, `Revision ${p.revision}, by ${p.author} · `, age(p.created_at)) : null,
    ];
  }
  const g = p.policy.gates;
  return [
    h("p", { class: "muted small" }, `Revision ${p.revision}, by ${p.author} · `, age(p.created_at)),
    h(
      "ol",
      { class: "policy-stages" },
      p.policy.stages.map((s) =>
        h(
          "li",
          { dataset: { stage: s.name } },
          h("strong", null, s.name),
          h(
            "span",
            { class: "muted" },
            ` ${selector(s.selector)}, ${s.percent} %, bake ${s.bake}, ${s.min_requests} requests or ${s.on_low_traffic === "pass" ? "pass" : "wait"}`,
          ),
        ),
      ),
    ),
    h(
      "p",
      { class: "muted small" },
      `Gates: 5xx at most ${pct(g.max_5xx_rate)} and ${g.max_5xx_ratio}× the baseline; `,
      `p99 at most ${g.max_p99_ratio}× the baseline${g.max_p99 ? ` and ${g.max_p99}` : ""}; `,
      `health ${g.health ? "on" : "off"}; silence ${g.silence}.`,
    ),
  ];
}

export function mount(el, ctx, param) {
  const list = h("ol", { class: "versions", id: "rollouts" });
  const policy = h("div", { class: "detail policy", id: "rollout-policy" });
  const detail = h("div", { class: "detail", id: "rollout" });
  // Outside what a refresh re-renders: an action's refusal stays until the
  // next action or another rollout is shown.
  const error = h("p", { class: "error", id: "rollout-error", role: "alert", hidden: true });
  replace(
    el,
    h("h1", null, "Rollouts"),
    h(
      "div",
      { class: "rollouts" },
      h("div", { class: "version-list" }, list, h("h2", null, "Policy"), policy),
      detail,
    ),
  );

  let selected = param ? Number(param) : null; // null: the newest
  let busy = false;

  function showError(message) {
    error.hidden = !message;
    replace(error, message || "");
  }

  function setBusy(on) {
    busy = on;
    for (const b of detail.querySelectorAll(".rollout-actions button")) b.disabled = on;
  }

  async function act(r, action, message) {
    setBusy(true);
    showError("");
    const body = action.name === "promote-all" ? { all: true } : {};
    if (message) body.message = message;
    const verb = action.name === "promote-all" ? "promote" : action.name;
    try {
      const res = await api(`/rollouts/${r.version}/${verb}`, { method: "POST", body });
      const last = res.timeline.at(-1)?.message;
      ctx.notify(`Version ${res.version}: ${last || words(res.state)}.`, "ok");
    } catch (err) {
      if (err instanceof ApiError) showError(`${action.label} refused: ${err.message}`);
      else ctx.fail(err);
    } finally {
      setBusy(false);
      ctx.refresh();
    }
  }

  function confirmAction(r, action) {
    const { title: heading, text } = action.confirm(r);
    const dialog = document.getElementById("rollout-dialog");
    const message = document.getElementById("rollout-message");
    replace(document.getElementById("rollout-dialog-title"), heading);
    replace(document.getElementById("rollout-dialog-text"), text);
    replace(document.getElementById("rollout-confirm"), action.label);
    message.value = "";
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue === "confirm") act(r, action, message.value.trim());
      },
      { once: true },
    );
    dialog.showModal();
    message.focus();
  }

  function actions(r, newest) {
    if (r.version !== newest) {
      return h("p", { class: "muted" }, `Version ${newest}'s rollout decides what nodes serve now.`);
    }
    const open = r.stages.at(-1) && !r.stages.at(-1).finished_at;
    const apply = ACTIONS.filter((a) => a.states.includes(r.state) && (!a.openStage || open));
    if (!apply.length) return null;
    if (!ctx.isAdmin) {
      return h("p", { class: "muted", id: "read-only" }, "Read-only token: rollout actions need an admin token.");
    }
    return apply.map((a) =>
      h(
        "button",
        {
          type: "button",
          id: `rollout-${a.name}`,
          class: a.kind,
          disabled: busy,
          onClick: () => (a.confirm ? confirmAction(r, a) : act(r, a, "")),
        },
        a.label,
      ),
    );
  }

  function render(r, newest, policy) {
    const names = r.policy?.stages?.map((s) => s.name) ?? [];
    replace(
      detail,
      h("h2", null, `Version ${r.version} `, stateBadge(r.state)),
      h(
        "dl",
        { class: "meta" },
        h("dt", null, "Base"),
        h("dd", null, r.base ? `version ${r.base}` : h("span", { class: "muted" }, "none: nothing was served before")),
        h("dt", null, "Stages"),
        h("dd", { id: "rollout-stage-names" }, names.length ? names.join(" → ") : h("span", { class: "muted" }, "none: sent to every node at once")),
        h("dt", null, "On the new version"),
        h("dd", { id: "on-new-version" }, onNewVersion(r)),
        h("dt", null, "Created"),
        h("dd", null, `${when(r.created_at)} (`, age(r.created_at), ")"),
        h("dt", null, "Updated"),
        h("dd", null, age(r.updated_at)),
      ),
      h("div", { class: "actions rollout-actions" }, actions(r, newest)),
      error,
      r.failure ? failure(r.failure) : null,
      h("h3", null, "Stages"),
      table(
        { id: "stages" },
        ["Stage", "Status", "Nodes", "Started", "New version", "Baseline"],
        r.stages.map(stageRow),
        names.length ? "No stage started yet." : "Not staged.",
      ),
      r.policy && ["running", "paused"].includes(r.state) && JSON.stringify(r.policy) !== JSON.stringify(policy)
        ? h("p", { class: "muted small", id: "older-policy" }, "The policy changed since this rollout started: it keeps the one it started with, and the next commit follows the new one.")
        : null,
      h("h3", null, "Timeline"),
      h(
        "ol",
        { class: "timeline", id: "timeline" },
        r.timeline.map((e) =>
          h(
            "li",
            { dataset: { kind: e.kind } },
            h("span", { class: "at muted", title: e.at }, when(e.at)),
            h("code", { class: "kind" }, e.kind),
            h("span", { class: "message" }, e.message),
          ),
        ),
      ),
    );
  }

  async function one(v, recent) {
    const known = recent.find((r) => r.version === v);
    if (known) return known;
    try {
      return await api(`/rollouts/${v}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  return {
    show(param) {
      const v = param ? Number(param) : null;
      if (v !== selected) {
        selected = v;
        showError("");
      }
    },
    async refresh() {
      const [latest, recent, current] = await Promise.all([
        api("/rollouts/latest").catch((err) => {
          if (err instanceof ApiError && err.status === 404) return null;
          throw err;
        }),
        api(`/rollouts?limit=${LIMIT}`),
        api("/rollout-policy"),
      ]);
      const rollouts = recent.rollouts;
      const newest = latest?.version ?? null;
      const wanted = selected === null || Number.isNaN(selected) ? newest : selected;
      if (changed(list, [rollouts, wanted])) {
        replace(
          list,
          rollouts.length
            ? rollouts.map((r) => rolloutItem(r, wanted))
            : h("li", { class: "empty" }, "No rollout yet: apply a config."),
        );
      }
      if (changed(policy, current)) replace(policy, policyView(current));
      const r = wanted === newest ? latest : await one(wanted, rollouts);
      if (!changed(detail, [r, wanted, newest, current.policy, ctx.role])) return;
      if (r) {
        render(r, newest, current.policy);
      } else if (newest === null) {
        replace(detail, h("p", { class: "muted" }, "No rollout yet: every committed version gets one."));
      } else {
        replace(detail, h("p", { class: "error" }, `Version ${wanted} has no rollout.`));
      }
    },
  };
}
