// Building the page from data without ever parsing data as HTML: every
// string becomes a text node or an attribute value, never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style" || key === "innerHTML" || key === "srcdoc" || key.toLowerCase().startsWith("on")) {
      // Handlers are functions only; markup and inline code never come from data.
      throw new Error(`refusing to set ${key}`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  return el;
}

/** An HTML element: h("td", {class: "num"}, "42"). */
export function h(tag, props, ...children) {
  return append(setProps(document.createElement(tag), props), children);
}

/** An SVG element, made the same way. */
export function svg(tag, props, ...children) {
  return append(setProps(document.createElementNS(SVG_NS, tag), props), children);
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "12s ago", "3m ago", "2h ago", "4d ago" from an RFC 3339 time. */
export function ago(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "never";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/**
 * "12s ago" that stays current: `refreshAges` rewrites it on every refresh
 * without re-rendering what is around it.
 */
export function age(iso) {
  return h("span", { class: "age", dataset: { at: iso }, title: when(iso) }, ago(iso));
}

/** Moves an `age` element to another time. */
export function setAge(el, iso) {
  if (!el || el.dataset.at === iso) return;
  el.dataset.at = iso;
  el.title = when(iso);
  el.textContent = ago(iso);
}

/** Rewrites every `age` element under `root`. */
export function refreshAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("span.age[data-at]")) {
    const text = ago(el.dataset.at, now);
    if (el.textContent !== text) el.textContent = text;
  }
}

const rendered = new WeakMap();

/**
 * Whether `data` differs from what `el` last showed. Pages re-render only
 * then, so that a refresh does not take away the user's text selection or
 * a half-done click.
 */
export function changed(el, data) {
  const key = JSON.stringify(data);
  if (rendered.get(el) === key) return false;
  rendered.set(el, key);
  return true;
}

/** A local date and time from an RFC 3339 time. */
export function when(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso) : t.toLocaleString();
}

/** A table with a header row; `rows` are arrays of cells or <tr> elements. */
export function table(props, headings, rows, empty = "Nothing yet.") {
  const body = rows.length
    ? rows.map((r) => (r instanceof Node ? r : h("tr", null, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", null, c))))))
    : [h("tr", null, h("td", { colspan: headings.length, class: "empty" }, empty))];
  return h(
    "table",
    props,
    h("thead", null, h("tr", null, headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, body),
  );
}

/** A small coloured label. */
export function badge(text, kind) {
  return h("span", { class: ["badge", kind && `badge-${kind}`] }, text);
}
