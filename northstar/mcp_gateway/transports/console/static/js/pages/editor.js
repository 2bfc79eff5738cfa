import { ApiError, api, enc, get } from "../api.js";
import { diffLines, lines } from "../diff.js";
import { $, $$, fill, h, parseJson, pretty, say, sayError, table, when } from "../dom.js";
import { fieldFor, segments } from "../pointer.js";

const DRAFT_ID = $("#editor").dataset.draftId;
const state = { current: null, versions: [], base: null };

function template() {
  const toolId = DRAFT_ID.replace(/[^a-z0-9_-]/g, "_");
  return {
    schema_version: 1, tool_id: toolId, title: "", description: "",
    scopes: [{
      name: `${toolId}.read`, description: "", firearm: null,
      operations: [{ name: "ping", description: "", wraps: "echo.ping", input: { presets: {}, restrict: {}, hide: [] } }],
    }],
    kpis: [],
  };
}

// -- the form -------------------------------------------------------------------------------
const fieldId = (pointer) => "f" + pointer.replace(/[^A-Za-z0-9]+/g, "-");

function field(label, pointer, value, { kind = "text", rows = 2, placeholder = "" } = {}) {
  const id = fieldId(pointer);
  const attrs = { id, "data-pointer": pointer, "data-kind": kind, placeholder, spellcheck: "false" };
  const text = kind === "json" ? (value === undefined ? "" : pretty(value)) : (value ?? "");
  const input = kind === "text" || kind === "nullable" || kind === "optional"
    ? h("input", { ...attrs, value: text })
    : h("textarea", { ...attrs, rows: kind === "json" ? Math.min(8, Math.max(rows, text.split("\n").length)) : rows, value: text });
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input,
    h("p", { class: "field-error", "data-error-for": pointer, hidden: true }));
}

function operationBlock(op, si, oi) {
  const p = `/scopes/${si}/operations/${oi}`;
  return h("fieldset", { class: "operation", "data-pointer-group": p },
    h("legend", {}, `Operation ${oi + 1}`, " ",
      h("button", { type: "button", class: "link", text: "remove", onclick: () => edit((s) => s.scopes[si].operations.splice(oi, 1)) })),
    h("div", { class: "grid" },
      field("Name", `${p}/name`, op.name),
      field("Wraps (a built-in operation)", `${p}/wraps`, op.wraps, { placeholder: "media_v2.create_asset" }),
      field("Title", `${p}/title`, op.title, { kind: "optional" })),
    field("Description", `${p}/description`, op.description, { kind: "textarea" }),
    h("div", { class: "grid two" },
      field("Input: presets, restrict, hide (JSON)", `${p}/input`, op.input ?? { presets: {}, restrict: {}, hide: [] }, { kind: "json" }),
      field("Annotations (JSON, optional)", `${p}/annotations`, op.annotations ?? undefined, { kind: "json" })));
}

function scopeBlock(scope, si) {
  const p = `/scopes/${si}`;
  return h("fieldset", { class: "scope" },
    h("legend", {}, `Scope ${si + 1}`, " ",
      h("button", { type: "button", class: "link", text: "remove", onclick: () => edit((s) => s.scopes.splice(si, 1)) })),
    h("div", { class: "grid" },
      field("Name", `${p}/name`, scope.name),
      field("Firearm (empty: open)", `${p}/firearm`, scope.firearm, { kind: "nullable", placeholder: "firearm.notes.write" })),
    field("Description", `${p}/description`, scope.description, { kind: "textarea" }),
    (scope.operations || []).map((op, oi) => operationBlock(op, si, oi)),
    h("button", { type: "button", text: "Add an operation", onclick: () => edit((s) => s.scopes[si].operations.push(
      { name: "", description: "", wraps: "", input: { presets: {}, restrict: {}, hide: [] } })) }));
}

function render(spec) {
  state.base = structuredClone(spec);
  fill($("#spec-form"),
    h("div", { class: "grid" },
      field("Tool id", "/tool_id", spec.tool_id),
      field("Title", "/title", spec.title),
      field("Version (optional)", "/version", spec.version, { kind: "optional", placeholder: "1.0.0" })),
    field("Description", "/description", spec.description, { kind: "textarea" }),
    (spec.scopes || []).map(scopeBlock),
    h("button", { type: "button", text: "Add a scope", onclick: () => edit((s) => s.scopes.push(
      { name: "", description: "", firearm: null, operations: [] })) }),
    field("KPIs (JSON list)", "/kpis", spec.kpis ?? [], { kind: "json" }));
}

function setAt(obj, pointer, value) {
  const segs = segments(pointer);
  let node = obj;
  segs.slice(0, -1).forEach((s, i) => {
    if (node[s] === undefined || node[s] === null) node[s] = /^\d+$/.test(segs[i + 1]) ? [] : {};
    node = node[s];
  });
  const last = segs[segs.length - 1];
  if (value === undefined) delete node[last];
  else node[last] = value;
}

/** The spec the form shows (unknown keys of the loaded spec kept); throws on a JSON field that does not parse. */
function collect() {
  const spec = structuredClone(state.base || template());
  const bad = [];
  for (const el of $$("[data-pointer]", $("#spec-form"))) {
    const { pointer, kind } = el.dataset;
    const raw = el.value;
    let value = raw;
    if (kind === "json") {
      try { value = parseJson(raw, "this field"); } catch (e) { bad.push({ path: pointer, message: e.message }); continue; }
    } else if (kind === "nullable") value = raw.trim() ? raw.trim() : null;
    else if (kind === "optional") value = raw.trim() ? raw : undefined;
    setAt(spec, pointer, value);
  }
  if (bad.length) throw Object.assign(new Error("some fields are not valid JSON"), { problems: bad });
  return spec;
}

function edit(change) {
  let spec;
  try { spec = collect(); } catch (e) { showProblems(e.problems || []); return; }
  change(spec);
  render(spec);
}

// -- problems beside their fields -------------------------------------------------------------
function clearProblems() {
  for (const p of $$(".field-error")) { p.hidden = true; p.replaceChildren(); }
  for (const el of $$("[aria-invalid]")) el.removeAttribute("aria-invalid");
  $("#problems").hidden = true;
}

function showProblems(problems) {
  clearProblems();
  const pointers = $$("[data-pointer]", $("#spec-form")).map((el) => el.dataset.pointer);
  const loose = [];
  for (const p of problems) {
    const path = p.path || "";
    const where = fieldFor(path, pointers);
    if (where === null) { loose.push(p); continue; }
    const slot = $(`[data-error-for="${CSS.escape(where)}"]`);
    slot.hidden = false;
    slot.append(h("span", { text: where === path ? p.message : `${path.slice(where.length)}: ${p.message}` }));
    $(`[data-pointer="${CSS.escape(where)}"]`).setAttribute("aria-invalid", "true");
  }
  const box = $("#problems");
  box.hidden = false;
  fill(box, h("p", { text: `${problems.length} problem${problems.length === 1 ? "" : "s"}: see the marked fields.` }),
    loose.length ? h("ul", {}, loose.map((p) => h("li", {}, h("code", { text: p.path || "(the definition)" }), " ", p.message))) : null);
  const first = $("[aria-invalid]");
  if (first) first.focus();
}

function problemsOf(err) {
  const errors = (err.details && err.details.errors) || [];
  // A 400 validation_error points into the request body ({"spec": ...}); the editor shows the spec.
  return errors.map((e) => ({ ...e, path: (e.path || "").replace(/^\/spec(?=\/|$)/, "") }));
}

// -- saving, history, diff, rollback ------------------------------------------------------------
async function save(spec, what = "Saved") {
  const expected = state.current ? state.current.version : 0;
  try {
    const rec = await api("PUT", `/v1/drafts/${enc(DRAFT_ID)}`, { expected_version: expected, spec });
    clearProblems();
    state.current = rec;
    render(rec.spec);
    await loadHistory();
    say(`${what} version ${rec.version}.`, "ok");
  } catch (err) {
    if (err instanceof ApiError && (err.code === "invalid_definition" || err.code === "validation_error")) {
      showProblems(problemsOf(err));
      say("Not saved: the definition has problems.", "error");
    } else if (err instanceof ApiError && err.code === "conflict") {
      say(`Not saved: version ${err.details.current_version} was saved meanwhile. Reload to see it.`, "error");
    } else sayError(err);
  }
}

function showVersion() {
  $("#draft-version").textContent = state.current ? `version ${state.current.version}` : "(new, not saved yet)";
}

function option(v, selected) {
  return h("option", { value: String(v.version), selected, text: `version ${v.version} (${when(v.created_at)})` });
}

async function loadHistory() {
  showVersion();
  if (!state.current) { fill($("#history"), h("p", { class: "muted", text: "No version yet." })); return; }
  state.versions = (await get(`/v1/drafts/${enc(DRAFT_ID)}/versions`)).versions;
  const latest = state.current.version;
  fill($("#history"), table([
    ["Version", (v) => String(v.version)],
    ["Saved", (v) => when(v.created_at)],
    ["By", (v) => v.actor || "—"],
    ["", (v) => (v.version === latest ? h("span", { class: "muted", text: "latest" })
      : h("button", { type: "button", class: "restore", "data-version": v.version, text: `Restore version ${v.version}`,
        onclick: () => save(v.spec, `Restored version ${v.version} as`) }))],
  ], [...state.versions].reverse(), { id: "version-table" }));
  const n = state.versions.length;
  fill($("#diff-a"), state.versions.map((v, i) => option(v, i === Math.max(0, n - 2))));
  fill($("#diff-b"), state.versions.map((v, i) => option(v, i === n - 1)));
}

function showDiff(ev) {
  ev.preventDefault();
  const pick = (sel) => state.versions.find((v) => String(v.version) === $(sel).value);
  const a = pick("#diff-a"), b = pick("#diff-b");
  if (!a || !b) return;
  const rows = diffLines(lines(a.spec), lines(b.spec));
  const changed = rows.filter((r) => r.op !== " ").length;
  fill($("#diff"), h("p", { class: "muted", text: changed ? `${changed} changed lines between version ${a.version} and version ${b.version}.` : "No difference." }),
    h("pre", {}, rows.map((r) => h("span", { class: r.op === "+" ? "add" : r.op === "-" ? "del" : "same", text: `${r.op} ${r.text}\n` }))));
}

async function start() {
  try {
    state.current = await get(`/v1/drafts/${enc(DRAFT_ID)}`);
    render(state.current.spec);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    render(template());
    say("A new draft: fill it in and save it.");
  }
  await loadHistory();
}

$("#save").addEventListener("click", () => {
  let spec;
  try { spec = collect(); } catch (e) { showProblems(e.problems || []); return; }
  save(spec).catch(sayError);
});
$("#diff-form").addEventListener("submit", showDiff);
start().catch(sayError);
