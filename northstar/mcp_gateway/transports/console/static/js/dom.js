// Building the page with DOM nodes and text only: nothing the gateway or a user sent is ever
// parsed as HTML, so no value can become markup or script.
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const pretty = (v) => JSON.stringify(v, null, 2);

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim(), text });
}

/** A table: columns are [header, (row) => cell content]. */
export function table(columns, rows, { id, empty = "Nothing yet.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted", text: empty });
  return h("table", { id },
    h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", { scope: "col", text: name })))),
    h("tbody", {}, rows.map((row, i) => h("tr", rowAttrs ? rowAttrs(row, i) : {},
      columns.map(([, cell]) => h("td", {}, cell(row, i)))))));
}

/** Facts as a definition list. */
export function facts(el, pairs) {
  return fill(el, pairs.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v === null || v === undefined ? "—" : v)]));
}

/** Say how an action went, in the page's status line. */
export function say(text, kind = "info") {
  const el = $("#status");
  if (!el) return;
  fill(el, h("p", { class: kind, text }));
}

export function sayError(err) {
  const code = err && err.code ? ` (${err.code})` : "";
  say(`${err && err.message ? err.message : String(err)}${code}`, "error");
}

export function parseJson(text, what) {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

export function isoFromLocal(value) {
  // <input type="datetime-local"> gives local wall time; the API wants ISO-8601 in UTC.
  return value ? new Date(value).toISOString() : "";
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
