// Version history: every version, newest first; for the one selected, what
// changed (added +, removed −, changed ~, reordered ↕, old → new), and for
// admin tokens a rollback that makes a new version with its content.

import { api, ApiError } from "./api.js";
import { h, replace, table, badge, age, when, changed } from "./dom.js";

export const title = "History";

const OPS = {
  added: ["+", "Added"],
  removed: ["−", "Removed"],
  changed: ["~", "Changed"],
  reordered: ["↕", "Reordered"],
};

function value(v) {
  if (v === undefined) return null;
  const compact = JSON.stringify(v);
  if (compact.length <= 60 && (typeof v !== "object" || v === null)) {
    return h("code", null, compact);
  }
  return h("pre", null, JSON.stringify(v, null, 2));
}

function changeRow(c) {
  const [sign, label] = OPS[c.op] ?? ["?", c.op];
  return h(
    "tr",
    { class: `op-${c.op}`, dataset: { path: c.path } },
    h("td", { class: "sign", title: label }, sign),
    h("td", null, h("code", { class: "path" }, c.path)),
    h("td", { class: "old" }, value(c.old)),
    h("td", { class: "arrow" }, c.old !== undefined && c.new !== undefined ? "→" : ""),
    h("td", { class: "new" }, value(c.new)),
  );
}

function versionItem(v, selected, newest) {
  return h(
    "li",
    { dataset: { version: v.version }, class: v.version === selected ? "selected" : "" },
    h(
      "a",
      { href: `#/history/${v.version}` },
      h(
        "div",
        { class: "line" },
        h("strong", null, `Version ${v.version}`),
        v.version === newest ? badge("newest", "ok") : null,
        v.rollback_of ? badge(`rollback to ${v.rollback_of}`, "info") : null,
      ),
      h("div", { class: "message" }, v.message || h("span", { class: "muted" }, "no message")),
      h(
        "div",
        { class: "muted small" },
        `${v.author} · `,
        age(v.created_at),
        ` · ${v.change_count} change${v.change_count === 1 ? "" : "s"}`,
      ),
    ),
  );
}

export function mount(el, ctx, param) {
  const list = h("ol", { class: "versions", id: "versions" });
  const more = h("button", { type: "button", class: "secondary", id: "older" }, "Show older versions");
  const detail = h("div", { class: "detail", id: "version-detail" });
  replace(
    el,
    h("h1", null, "History"),
    h("div", { class: "history" }, h("div", { class: "version-list" }, list, more), detail),
  );

  let limit = 50;
  let versions = [];
  let selected = param ? Number(param) : null;
  let against = null; // null: the version before
  let shown = null; // "v:against" rendered in the detail pane
  const cache = new Map(); // "v:against" -> {meta, diff}; versions never change

  more.addEventListener("click", () => {
    limit = Math.min(1000, limit + 50);
    ctx.refresh();
  });

  async function load(v, w) {
    const key = `${v}:${w ?? ""}`;
    if (!cache.has(key)) {
      const q = w === null ? "" : `?against=${w}`;
      const [meta, diff] = await Promise.all([api(`/versions/${v}`), api(`/versions/${v}/diff${q}`)]);
      delete meta.config;
      cache.set(key, { meta, diff });
    }
    return cache.get(key);
  }

  function againstPicker(v, from) {
    const select = h(
      "select",
      { id: "against", "aria-label": "compare with" },
      versions
        .filter((x) => x.version !== v)
        .map((x) => h("option", { value: x.version, selected: x.version === from }, `version ${x.version}`)),
      from === 0 ? h("option", { value: 0, selected: true }, "nothing (first version)") : null,
    );
    select.addEventListener("change", () => {
      against = Number(select.value) === v - 1 ? null : Number(select.value);
      ctx.refresh();
    });
    return select;
  }

  function rollbackControls(v, newest) {
    if (!ctx.isAdmin) {
      return h("p", { class: "muted", id: "read-only" }, "Read-only token: rollback needs an admin token.");
    }
    if (v === newest) {
      return h("p", { class: "muted" }, "This is the newest version.");
    }
    const button = h("button", { type: "button", id: "rollback", class: "danger" }, `Roll back to version ${v}`);
    button.addEventListener("click", () => confirmRollback(v));
    return button;
  }

  function confirmRollback(v) {
    const dialog = document.getElementById("rollback-dialog");
    const message = document.getElementById("rollback-message");
    replace(document.getElementById("rollback-target"), String(v));
    message.value = "";
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue === "confirm") rollback(v, message.value.trim());
      },
      { once: true },
    );
    dialog.showModal();
    message.focus();
  }

  async function rollback(v, message) {
    try {
      const res = await api(`/versions/${v}/rollback`, {
        method: "POST",
        body: message ? { message } : {},
      });
      if (res.created) {
        ctx.notify(`Rolled back: version ${res.version} has the content of version ${v}.`, "ok");
        location.hash = `#/history/${res.version}`;
      } else {
        ctx.notify(`Version ${res.version} already has the content of version ${v}; nothing changed.`, "info");
      }
      ctx.refresh();
    } catch (err) {
      if (err instanceof ApiError) ctx.notify(`Rollback refused: ${err.message}`, "error");
      else ctx.fail(err);
    }
  }

  async function renderDetail(newest) {
    if (selected === null || Number.isNaN(selected)) {
      replace(detail, h("p", { class: "muted" }, "Choose a version to see what it changed."));
      shown = null;
      return;
    }
    const key = `${selected}:${against ?? ""}:${newest}:${ctx.role}`;
    if (shown === key) return;
    const v = selected;
    const { meta, diff } = await load(v, against);
    if (v !== selected) return;
    shown = key;
    replace(
      detail,
      h("h2", null, `Version ${meta.version}`, meta.rollback_of ? h("span", { class: "muted" }, ` · rollback to ${meta.rollback_of}`) : null),
      h(
        "dl",
        { class: "meta" },
        h("dt", null, "Message"),
        h("dd", null, meta.message || h("span", { class: "muted" }, "none")),
        h("dt", null, "Author"),
        h("dd", null, meta.author),
        h("dt", null, "Created"),
        h("dd", null, `${when(meta.created_at)} (`, age(meta.created_at), ")"),
        h("dt", null, "Hash"),
        h("dd", null, h("code", { class: "hash" }, meta.hash)),
      ),
      h("div", { class: "actions" }, rollbackControls(v, newest)),
      h("h3", null, "Changes from ", againstPicker(v, diff.from)),
      table(
        { id: "changes", class: "diff" },
        ["", "Path", "Old", "", "New"],
        diff.changes.map(changeRow),
        "No differences.",
      ),
    );
  }

  return {
    show(param) {
      const v = param ? Number(param) : null;
      if (v !== selected) {
        selected = v;
        against = null;
      }
    },
    async refresh() {
      const res = await api(`/versions?limit=${limit}`);
      versions = res.versions;
      const newest = versions[0]?.version ?? 0;
      if (selected === null && newest) selected = newest;
      more.hidden = versions.length < limit || limit >= 1000;
      if (changed(list, [versions, selected])) {
        replace(
          list,
          versions.length
            ? versions.map((v) => versionItem(v, selected, newest))
            : h("li", { class: "empty" }, "No version yet: apply a config."),
        );
      }
      try {
        await renderDetail(newest);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          replace(detail, h("p", { class: "error" }, `Version ${selected} does not exist.`));
          shown = null;
        } else {
          throw err;
        }
      }
    },
  };
}
