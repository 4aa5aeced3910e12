// The dashboard driven in headless Chromium, as a person would use it,
// against a control plane that tests/dashboard.rs started with two fake
// nodes (edge-1, labelled stage=canary, applies every version; edge-2,
// labelled stage=main, refuses one naming 127.0.0.1:3003). run.sh
// installs playwright-core and Chromium, then runs this with:
//
//   ISAME_URL              the control plane, http://127.0.0.1:PORT
//   ISAME_ADMIN_TOKEN      an admin token
//   ISAME_VIEWER_TOKEN     a viewer token
//   ISAME_NODES            the node ids, comma-separated
//   ISAME_SCREENSHOTS_DIR  where to write PNGs (optional)
//   ISAME_PLAYWRIGHT_DIR   where playwright-core is installed
//   ISAME_CHROMIUM         the browser
//
// Prints one line `RESULT {json}` on stdout for the Rust test to check
// against the REST API; progress and failures go to stderr. Exit 0 only
// when every step passed.

import { createRequire } from "node:module";
import { mkdtemp, rm, mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env("ISAME_URL");
const ADMIN = env("ISAME_ADMIN_TOKEN");
const VIEWER = env("ISAME_VIEWER_TOKEN");
const NODES = env("ISAME_NODES").split(",");
const SHOTS = process.env.ISAME_SCREENSHOTS_DIR || "";
const require = createRequire(path.join(env("ISAME_PLAYWRIGHT_DIR"), "package.json"));
const { chromium } = require("playwright-core");

const TIMEOUT = 15_000;
const log = (...a) => console.error("dashboard-e2e:", ...a);
let current = "start";
const step = (name) => {
  current = name;
  log(`step: ${name}`);
};

// Whatever happens, the run ends.
setTimeout(() => {
  log(`timed out in step "${current}"`);
  process.exit(1);
}, 300_000).unref();

/** The REST API, as a script outside the browser uses it. */
async function rest(method, p, { body, headers = {}, token = ADMIN } = {}) {
  const res = await fetch(`${BASE}/api/v1${p}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/** Waits until the element's trimmed text is exactly `text`. */
async function waitText(page, selector, text) {
  try {
    await page.waitForFunction(
      ([s, t]) => document.querySelector(s)?.textContent.trim() === t,
      [selector, String(text)],
      { timeout: TIMEOUT },
    );
  } catch (e) {
    const now = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => "(absent)");
    throw new Error(`${selector}: wanted ${JSON.stringify(String(text))}, have ${JSON.stringify(now)}`);
  }
}

/** Polls `ok` (async) until it holds; `what` says what for the error. */
async function until(what, ok) {
  const deadline = Date.now() + TIMEOUT;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Node id -> the version it ACKed, over REST. */
async function versions() {
  const { nodes } = await rest("GET", "/nodes");
  return Object.fromEntries(nodes.map((n) => [n.id, n.version]));
}

/** Waits until an element matching `selector` contains `text`. */
async function waitContains(page, selector, text) {
  await page.locator(selector, { hasText: text }).first().waitFor({ timeout: TIMEOUT });
}

async function shot(page, name) {
  if (!SHOTS) return;
  await mkdir(SHOTS, { recursive: true });
  // Let the last refresh settle.
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  log(`screenshot ${name}.png`);
}

const problems = [];
// Answers the steps ask for on purpose (a wrong token: 401; an action the
// rollout has moved past: 409); Chromium logs every non-2xx fetch as a
// console error.
const provoked = [/status of 401/];
function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error" && !provoked.some((re) => re.test(m.text()))) problems.push(`${who}: console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // A poll cut short by a reload or a closing tab is not a failure.
    const why = r.failure()?.errorText ?? "";
    if (!why.includes("ERR_ABORTED")) problems.push(`${who}: request failed: ${r.url()} ${why}`);
  });
}

const profile = await mkdtemp(path.join(os.tmpdir(), "isame-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env("ISAME_CHROMIUM"),
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 760 },
  timeout: 60_000,
});
const result = {};
let failed = null;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page, "admin tab");

  step("the page is served with its security headers");
  const res = await page.goto(BASE);
  const h = res.headers();
  assert.equal(res.status(), 200);
  assert.match(h["content-security-policy"], /default-src 'self'/);
  assert.doesNotMatch(h["content-security-policy"], /unsafe-inline/);
  assert.equal(h["x-frame-options"], "DENY");
  assert.equal(h["x-content-type-options"], "nosniff");
  await page.locator("#login-form").waitFor({ timeout: TIMEOUT });

  step("a wrong token is refused");
  await page.fill("#token", "not-a-token-of-this-control-plane");
  await page.click("#login-submit");
  await waitContains(page, "#login-error", "not accepted");
  assert.ok(await page.locator("#app").isHidden());
  await shot(page, "login");

  step("an admin signs in and sees the fleet");
  await page.fill("#token", ADMIN);
  await page.click("#login-submit");
  await waitContains(page, "#who", "(admin)");
  const v1 = (await rest("GET", "/versions?limit=1")).versions[0].version;
  await waitText(page, "#newest", `Version ${v1}`);
  for (const id of NODES) {
    await page.locator(`#nodes tr[data-node="${id}"]`).waitFor({ timeout: TIMEOUT });
    await waitText(page, `#nodes tr[data-node="${id}"] td.version`, v1);
  }
  assert.equal(await page.evaluate(() => sessionStorage.getItem("isame.token")), ADMIN);
  assert.deepEqual(await context.cookies(), [], "the dashboard sets no cookie");
  // Everything after this happens without a reload.
  await page.evaluate(() => {
    window.isameMarker = "still here";
  });

  step("a change made over REST appears without a reload");
  const config = await rest("GET", "/config");
  const web = config.upstreams.find((u) => u.name === "web");
  web.algorithm = "consistent_hash";
  web.hash_on = "header:X-User";
  web.sticky = { cookie: "lb" };
  web.slow_start = "30s";
  web.outlier_detection = { consecutive_5xx: 3 };
  web.retry = { retry_on: ["connect_failure", "5xx", 429], per_try_timeout: "250ms" };
  web.backends.find((b) => b.url === "http://127.0.0.1:3001").drain = true;
  web.backends.push({ url: "http://api.internal:8080" });
  web.backends.find((b) => b.url === "http://127.0.0.1:3002").weight = 5;
  web.backends.push({ url: "http://127.0.0.1:3003", weight: 2 });
  const applied = await rest("PUT", "/config", {
    body: config,
    headers: { "X-Isame-Message": "drain 3001; weighted web pool with a third backend" },
  });
  const v2 = applied.version;
  assert.equal(v2, v1 + 1);
  await waitText(page, "#newest", `Version ${v2}`);
  await waitText(page, `#nodes tr[data-node="${NODES[0]}"] td.version`, v2);
  if (NODES[1]) {
    await waitContains(page, `#nodes tr[data-node="${NODES[1]}"]`, `Refused version ${v2}`);
    await waitContains(page, `#nodes tr[data-node="${NODES[1]}"]`, "1 behind");
  }
  await waitContains(page, "#fleet-summary", "behind");
  assert.equal(await page.evaluate(() => window.isameMarker), "still here");
  await shot(page, "fleet");

  step("upstreams show backends with their health across the fleet");
  await page.click('nav a[data-page="upstreams"]');
  const third = 'section[data-upstream="web"] tr[data-backend="http://127.0.0.1:3003"]';
  await page.locator(third).waitFor({ timeout: TIMEOUT });
  await waitContains(page, third, "healthy on 1 of 1 nodes");
  await waitContains(page, 'section[data-upstream="web"] tr[data-backend="http://127.0.0.1:3002"]', "healthy on");
  if (NODES[1]) {
    await waitContains(page, 'section[data-upstream="web"] tr[data-backend="http://127.0.0.1:3002"]', "ejected on 1");
  }
  await waitContains(page, 'section[data-upstream="web"] tr[data-backend="http://127.0.0.1:3001"]', "draining");
  await waitContains(page, 'section[data-upstream="web"] h2', "consistent hash on header:X-User");
  await waitContains(page, 'section[data-upstream="web"] h2', "sticky cookie lb");
  await waitContains(page, 'section[data-upstream="web"] h2', "slow start 30s");
  await waitContains(page, 'section[data-upstream="web"] h2', "outlier detection");
  await waitContains(page, 'section[data-upstream="web"] tr[data-backend="http://api.internal:8080"]', "DNS failing on 1");
  await waitContains(page, 'section[data-upstream="web"] tr[data-backend="http://api.internal:8080"]', "2 addresses");
  await waitContains(page, 'section[data-upstream="web"] h2', "retries on connect_failure, 5xx, 429, 250ms a try");
  await shot(page, "upstreams");

  step("traffic shows live rates per upstream");
  await page.click('nav a[data-page="traffic"]');
  await page.waitForFunction(
    () => parseFloat(document.querySelector('#traffic tr[data-upstream="web"] td.rps')?.textContent) > 0,
    null,
    { timeout: TIMEOUT },
  );
  // A sparkline of a few samples (for a screenshot, of a minute).
  await page.waitForFunction(
    (n) =>
      (document.querySelector('#traffic tr[data-upstream="web"] polyline.requests')?.getAttribute("points") ?? "")
        .split(" ").length >= n,
    SHOTS ? 20 : 4,
    { timeout: SHOTS ? 90_000 : 30_000, polling: 500 },
  );
  await shot(page, "traffic");

  step("history shows what a version changed");
  await page.click('nav a[data-page="history"]');
  await page.locator(`#versions li[data-version="${v2}"] a`).click();
  const weight = '#changes tr[data-path="upstreams[web].backends[http://127.0.0.1:3002].weight"]';
  await page.locator(weight).waitFor({ timeout: TIMEOUT });
  await waitText(page, `${weight} td.old`, "1");
  await waitText(page, `${weight} td.new`, "5");
  await waitText(page, `${weight} td.sign`, "~");
  await waitText(page, '#changes tr[data-path="upstreams[web].backends[http://127.0.0.1:3003]"] td.sign', "+");
  await waitContains(page, "#version-detail", "weighted web pool with a third backend");
  await waitText(page, '#changes tr[data-path="upstreams[web].backends[http://127.0.0.1:3001].drain"] td.new', "true");
  await shot(page, "history");

  step("an admin rolls back from the UI");
  await page.locator(`#versions li[data-version="${v1}"] a`).click();
  await page.locator("#rollback").click();
  await page.locator("#rollback-dialog").waitFor({ state: "visible", timeout: TIMEOUT });
  // Cancel first: nothing happens.
  await page.click("#rollback-cancel");
  await page.locator("#rollback-dialog").waitFor({ state: "hidden", timeout: TIMEOUT });
  assert.equal((await rest("GET", "/versions?limit=1")).versions[0].version, v2, "cancel changed nothing");
  await page.locator("#rollback").click();
  const message = "undo the third backend: edge-2 refuses it";
  await page.fill("#rollback-message", message);
  await shot(page, "rollback");
  await page.click("#rollback-confirm");
  const v3 = v2 + 1;
  await waitText(page, "#newest", `Version ${v3}`);
  await waitContains(page, "#banner", `version ${v3} has the content of version ${v1}`);
  await waitContains(page, `#versions li[data-version="${v3}"]`, `rollback to ${v1}`);
  await waitContains(page, "#version-detail", message);
  const restored = await rest("GET", `/versions/${v3}`);
  assert.equal(restored.rollback_of, v1);
  assert.deepEqual(restored.config, (await rest("GET", `/versions/${v1}`)).config);
  Object.assign(result, { before: v1, changed: v2, rollback: v3, rolled_back_to: v1, message });
  await page.click('nav a[data-page="fleet"]');
  for (const id of NODES) await waitText(page, `#nodes tr[data-node="${id}"] td.version`, v3);

  step("a viewer sees no rollback");
  // sessionStorage belongs to one tab: a new tab signs in afresh.
  const viewer = await context.newPage();
  watch(viewer, "viewer tab");
  await viewer.goto(`${BASE}/#/history/${v1}`);
  await viewer.locator("#login-form").waitFor({ timeout: TIMEOUT });
  await viewer.fill("#token", VIEWER);
  await viewer.click("#login-submit");
  await waitContains(viewer, "#who", "(viewer)");
  await viewer.locator("#read-only").waitFor({ timeout: TIMEOUT });
  await waitContains(viewer, "#version-detail", `Version ${v1}`);
  assert.equal(await viewer.locator("#rollback").count(), 0, "a viewer has no rollback button");

  step("the rollouts page shows a version that went everywhere at once");
  assert.equal(NODES.length, 2, "the rollout steps need the canary node and another");
  const [canaryNode, mainNode] = NODES;
  await page.bringToFront();
  await page.click('nav a[data-page="rollouts"]');
  await waitText(page, "#rollout h2", `Version ${v3} completed`);
  await waitContains(page, '#timeline li[data-kind="created"]', "no rollout policy: sent to every node at once");
  await waitContains(page, "#stages", "Not staged.");
  await waitText(page, "#on-new-version", "every node");
  await waitContains(page, "#rollout-policy", "No rollout policy");
  for (const v of [v1, v2, v3]) await page.locator(`#rollouts li[data-version="${v}"]`).waitFor({ timeout: TIMEOUT });
  assert.equal(await page.locator(".rollout-actions button").count(), 0, "a completed rollout has no actions");

  step("with a policy, a committed version goes to the canary first");
  const policy = await rest("PUT", "/rollout-policy", {
    body: {
      stages: [
        { name: "canary", selector: { stage: "canary" }, bake: "1h" },
        { name: "rest", bake: "1h" },
      ],
    },
  });
  await waitContains(page, "#rollout-policy", `Revision ${policy.revision}`);
  await waitContains(page, '#rollout-policy li[data-stage="canary"]', "stage=canary, 100 %, bake 1h");
  await waitContains(page, '#rollout-policy li[data-stage="rest"]', "every node");
  const next = await rest("GET", "/config");
  next.upstreams.find((u) => u.name === "api").backends.push({ url: "http://127.0.0.1:4002" });
  const v4 = (await rest("PUT", "/config", { body: next, headers: { "X-Isame-Message": "a second api backend" } })).version;
  assert.equal(v4, v3 + 1);
  const canary = '#stages tr[data-stage="canary"]';
  const restStage = '#stages tr[data-stage="rest"]';
  await waitText(page, "#rollout h2", `Version ${v4} running`);
  await waitText(page, "#rollout-stage-names", "canary → rest");
  await waitText(page, `${canary} td.members`, canaryNode);
  await waitContains(page, `${canary} td.stage-status`, "baking");
  await waitContains(page, `${canary} td.candidate`, "no requests yet");
  await waitText(page, "#on-new-version", canaryNode);
  await waitContains(page, '#timeline li[data-kind="stage_started"]', `stage canary started: 1 nodes (${canaryNode})`);
  await waitContains(page, `#rollouts li[data-version="${v4}"]`, "running");
  await waitContains(page, `#rollouts li[data-version="${v4}"]`, "stage canary");
  await until(`${canaryNode} on version ${v4}, ${mainNode} on ${v3}`, async () => {
    const on = await versions();
    return on[canaryNode] === v4 && on[mainNode] === v3;
  });
  for (const id of ["rollout-pause", "rollout-promote", "rollout-promote-all", "rollout-abort"]) {
    await page.locator(`#${id}`).waitFor({ timeout: TIMEOUT });
  }
  assert.equal(await page.locator("#rollout-resume").count(), 0, "a running rollout cannot be resumed");
  await shot(page, "rollouts");

  step("a viewer sees the rollout but no actions");
  await viewer.bringToFront();
  await viewer.click('nav a[data-page="rollouts"]');
  await waitText(viewer, "#rollout h2", `Version ${v4} running`);
  await waitText(viewer, `${canary} td.members`, canaryNode);
  await waitContains(viewer, '#timeline li[data-kind="stage_started"]', "stage canary started");
  await viewer.locator("#read-only").waitFor({ timeout: TIMEOUT });
  assert.equal(await viewer.locator(".rollout-actions button").count(), 0, "a viewer has no rollout actions");

  step("an admin pauses and resumes the rollout");
  await page.bringToFront();
  await page.click("#rollout-pause");
  await waitText(page, "#rollout h2", `Version ${v4} paused`);
  await waitContains(page, "#banner", `Version ${v4}: paused by`);
  await waitContains(page, '#timeline li[data-kind="paused"]', "paused by");
  assert.equal((await rest("GET", `/rollouts/${v4}`)).state, "paused");
  await page.click("#rollout-resume");
  await waitText(page, "#rollout h2", `Version ${v4} running`);
  await waitContains(page, '#timeline li[data-kind="resumed"]', "the stage bakes again from now");
  assert.equal((await rest("GET", `/rollouts/${v4}`)).state, "running");

  step("an action the rollout has moved past shows the server's reason");
  // Another operator pauses it while this page still shows it running: the
  // page's next refresh of the rollout is held until the click is done.
  provoked.push(/status of 409/);
  const held = [];
  let caught;
  let release = false;
  const holding = new Promise((resolve) => (caught = resolve));
  await page.route("**/api/v1/rollouts/latest", (route) => {
    if (release) return route.continue();
    held.push(route);
    caught();
  });
  await holding;
  await rest("POST", `/rollouts/${v4}/pause`, { body: { message: "paused from another console" } });
  await page.click("#rollout-pause");
  const reason = `Pause refused: cannot pause the rollout of version ${v4}: it is paused`;
  await waitText(page, "#rollout-error", reason);
  release = true;
  for (const route of held) await route.continue();
  await page.unroute("**/api/v1/rollouts/latest");
  await waitText(page, "#rollout h2", `Version ${v4} paused`);
  await waitText(page, "#rollout-error", reason);
  provoked.pop();

  step("promote passes the canary stage and starts the next");
  await page.click("#rollout-promote");
  await waitContains(page, `${canary} td.stage-status`, "promoted");
  await waitText(page, `${restStage} td.members`, mainNode);
  await waitContains(page, `${restStage} td.stage-status`, "baking");
  await waitText(page, "#rollout h2", `Version ${v4} running`);
  await waitText(page, "#on-new-version", `${canaryNode}, ${mainNode}`);
  assert.ok(await page.locator("#rollout-error").isHidden(), "the refusal is gone with the next action");
  await until(`every node on version ${v4}`, async () => Object.values(await versions()).every((v) => v === v4));

  step("abort sends every node back to the base");
  await page.click("#rollout-abort");
  await page.locator("#rollout-dialog").waitFor({ state: "visible", timeout: TIMEOUT });
  await waitContains(page, "#rollout-dialog-text", `Every data plane goes back to version ${v3}`);
  const abortMessage = "aborted from the dashboard";
  await page.fill("#rollout-message", abortMessage);
  await page.click("#rollout-confirm");
  await waitText(page, "#rollout h2", `Version ${v4} aborted`);
  await waitContains(page, '#timeline li[data-kind="aborted"]', `every node back on version ${v3}`);
  await waitText(page, "#on-new-version", "none");
  await until(`every node back on version ${v3}`, async () => Object.values(await versions()).every((v) => v === v3));
  assert.equal(await page.locator("#rollout-abort").count(), 0, "an aborted rollout cannot be aborted again");

  step("promote all sends the version to every node");
  await page.click("#rollout-promote-all");
  await page.locator("#rollout-dialog").waitFor({ state: "visible", timeout: TIMEOUT });
  // Cancel first: nothing happens.
  await page.click("#rollout-cancel");
  await page.locator("#rollout-dialog").waitFor({ state: "hidden", timeout: TIMEOUT });
  assert.equal((await rest("GET", `/rollouts/${v4}`)).state, "aborted", "cancel changed nothing");
  await page.click("#rollout-promote-all");
  await waitContains(page, "#rollout-dialog-title", `Promote version ${v4} to every node?`);
  await page.click("#rollout-confirm");
  await waitText(page, "#rollout h2", `Version ${v4} promoted`);
  await waitContains(page, '#timeline li[data-kind="promoted"]', `every node takes version ${v4}`);
  await waitText(page, "#on-new-version", "every node");
  await until(`every node on version ${v4}`, async () => Object.values(await versions()).every((v) => v === v4));
  assert.equal(await page.locator(".rollout-actions button").count(), 0, "a promoted rollout has no actions");
  Object.assign(result, { staged: v4, abort_message: abortMessage });

  step("an older rollout opens from the list");
  await page.locator(`#rollouts li[data-version="${v3}"] a`).click();
  await waitText(page, "#rollout h2", `Version ${v3} completed`);
  await waitContains(page, ".rollout-actions", `Version ${v4}'s rollout decides what nodes serve now.`);
  assert.equal(await page.evaluate(() => location.hash), `#/rollouts/${v3}`);

  step("logging out forgets the token");
  await viewer.click("#logout");
  await viewer.locator("#login-form").waitFor({ timeout: TIMEOUT });
  assert.equal(await viewer.evaluate(() => sessionStorage.getItem("isame.token")), null);
  await viewer.reload();
  await viewer.locator("#login-form").waitFor({ timeout: TIMEOUT });

  step("a token refused mid-session sends the user back to sign in");
  await page.evaluate(() => sessionStorage.setItem("isame.token", "revoked-token-0000000000000000000000"));
  await waitContains(page, "#login-error", "not accepted any more");
  assert.ok(await page.locator("#app").isHidden());

  assert.deepEqual(problems, [], "the browser reported problems");
} catch (e) {
  failed = e;
} finally {
  await context.close().catch(() => {});
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}
if (failed) {
  log(`FAILED in step "${current}": ${failed.stack || failed}`);
  if (problems.length) log(`browser problems:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`RESULT ${JSON.stringify(result)}`);
log("all steps passed");
