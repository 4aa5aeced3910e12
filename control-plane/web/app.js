// The dashboard: sign in with a token, then one page per hash route
// (#/fleet, #/upstreams, #/traffic, #/history[/N], #/rollouts[/N]),
// refreshed every few seconds so that changes made elsewhere appear
// without a reload.

import { api, token, setToken, clearToken, Unauthorized } from "./api.js";
import { replace, refreshAges } from "./dom.js";
import * as fleet from "./fleet.js";
import * as upstreams from "./upstreams.js";
import * as traffic from "./traffic.js";
import * as history from "./history.js";
import * as rollouts from "./rollouts.js";

const PAGES = { fleet, upstreams, traffic, history, rollouts };
const REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);

const state = {
  who: null, // {name, role}
  page: null, // {name, param, view}
  timer: null,
  inFlight: false,
  again: false,
};

/** What pages may use. */
const ctx = {
  get role() {
    return state.who?.role;
  },
  get isAdmin() {
    return state.who?.role === "admin";
  },
  /** Refreshes everything now (after a change made from the page). */
  refresh: () => tick(),
  /** Shows a message above the page. */
  notify,
  /** Handles a failed call: a 401 signs out, anything else is shown. */
  fail,
};

function notify(message, kind = "info") {
  const el = $("banner");
  el.hidden = !message;
  el.className = `banner banner-${kind}`;
  replace(el, message || "");
}

function fail(err) {
  if (err instanceof Unauthorized) {
    signOut("The token was not accepted any more. Sign in again.");
  } else {
    notify(`Cannot load: ${err.message}`, "error");
  }
}

function showLogin(message) {
  stopPolling();
  $("app").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  replace(error, message || "");
  $("token").value = "";
  $("token").focus();
}

function signOut(message) {
  clearToken();
  state.who = null;
  state.page = null;
  replace($("page"));
  showLogin(message);
}

async function signIn(candidate) {
  const who = await api("/whoami", { as: candidate });
  setToken(candidate);
  state.who = who;
  $("login").hidden = true;
  $("app").hidden = false;
  replace($("who"), `${who.name} (${who.role})`);
  $("who").dataset.role = who.role;
  document.body.dataset.role = who.role;
  notify("");
  route();
  startPolling();
}

async function onLogin(ev) {
  ev.preventDefault();
  const candidate = $("token").value.trim();
  if (!candidate) return;
  const button = $("login-submit");
  button.disabled = true;
  try {
    await signIn(candidate);
  } catch (err) {
    const message =
      err instanceof Unauthorized
        ? "That token was not accepted."
        : `Cannot sign in: ${err.message}`;
    showLogin(message);
  } finally {
    button.disabled = false;
  }
}

/** Mounts the page the hash names (default: the fleet). */
function route() {
  if (!state.who) return;
  const [, name = "fleet", param] = (location.hash || "#/fleet").split("/");
  const key = Object.hasOwn(PAGES, name) ? name : "fleet";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === key) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (state.page?.name === key) {
    state.page.view.show?.(param);
  } else {
    const el = $("page");
    replace(el);
    notify("");
    state.page = { name: key, view: PAGES[key].mount(el, ctx, param) };
    document.title = `${PAGES[key].title} · Isame`;
  }
  tick();
}

/** The header: newest version and how the fleet follows it. */
async function refreshHeader() {
  const f = await api("/fleet");
  replace($("newest"), `Version ${f.version}`);
  $("newest").dataset.version = f.version;
  const n = f.nodes;
  const parts = [`${n.connected}/${n.total} nodes connected`];
  if (n.behind.length) parts.push(`${n.behind.length} behind`);
  if (n.nacked.length) parts.push(`${n.nacked.length} refused`);
  replace($("fleet-summary"), parts.join(" · "));
  $("fleet-summary").className = n.behind.length || n.nacked.length ? "warn" : "";
}

/** Refreshes the header, the traffic samples and the page. */
async function tick() {
  if (!state.who) return;
  if (state.inFlight) {
    // A page just mounted, or a change was made: refresh once more after this.
    state.again = true;
    return;
  }
  state.inFlight = true;
  try {
    const page = state.page?.view;
    await Promise.all([refreshHeader(), traffic.sample().then(() => page?.refresh())]);
    refreshAges();
    if ($("banner").classList.contains("banner-error")) notify("");
  } catch (err) {
    fail(err);
  } finally {
    state.inFlight = false;
    if (state.again) {
      state.again = false;
      tick();
    }
  }
}

function startPolling() {
  stopPolling();
  state.timer = setInterval(() => {
    if (!document.hidden) tick();
  }, REFRESH_MS);
}

function stopPolling() {
  clearInterval(state.timer);
  state.timer = null;
}

function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => signOut(""));
  $("rollback-cancel").addEventListener("click", () => $("rollback-dialog").close("cancel"));
  $("rollout-cancel").addEventListener("click", () => $("rollout-dialog").close("cancel"));
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  const saved = token();
  if (!saved) {
    showLogin("");
    return;
  }
  signIn(saved).catch((err) => {
    if (err instanceof Unauthorized) signOut("The saved token was not accepted. Sign in again.");
    else showLogin(`Cannot reach the control plane: ${err.message}`);
  });
}

boot();
