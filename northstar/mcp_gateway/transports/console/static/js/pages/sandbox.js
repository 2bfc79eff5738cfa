import { ApiError, api, enc, get } from "../api.js";
import { $, badge, facts, fill, h, parseJson, pretty, say, sayError, table } from "../dom.js";

const schemas = new Map();

function skeleton(schema) {
  // Arguments to start from: each required property with an empty value of its type.
  const out = {};
  for (const name of (schema && schema.required) || []) {
    const t = ((schema.properties || {})[name] || {}).type;
    out[name] = t === "integer" || t === "number" ? 0 : t === "boolean" ? false : t === "array" ? [] : t === "object" ? {} : "";
  }
  return out;
}

async function loadOperations() {
  const inventory = await get("/v1/tools");
  const names = [];
  for (const tool of inventory.tools || []) {
    for (const scope of tool.scopes || []) {
      for (const op of scope.operations || []) { names.push(op.name); schemas.set(op.name, op.inputSchema); }
    }
  }
  fill($("#operations"), names.map((n) => h("option", { value: n })));
}

async function loadDraftOperations(draftId) {
  if (!draftId) return;
  try {
    const draft = await get(`/v1/drafts/${enc(draftId)}`);
    const spec = draft.spec || {};
    const names = (spec.scopes || []).flatMap((s) => (s.operations || []).map((o) => `${spec.tool_id}.${o.name}`));
    fill($("#operations"), names.map((n) => h("option", { value: n })));
    if (names.length && !$("#tool").value) $("#tool").value = names[0];
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }
}

function mockPolicy() {
  const grants = $("#mock-grants").value.split(",").map((s) => s.trim()).filter(Boolean);
  const bindings = parseJson($("#mock-bindings").value, "Scope bindings");
  const deny = $("#mock-deny").value.trim();
  const replace = $("#mock-replace").checked;
  const approval = $("#mock-approval").value;
  if (!grants.length && bindings === undefined && !deny && !replace && !approval) return undefined;
  const mock = { grants };
  if (approval) mock.approval = approval;
  if (bindings !== undefined) mock.bindings = bindings;
  if (deny) mock.force_deny = deny;
  if (replace) mock.replace_grants = true;
  return mock;
}

function traceTable(trace) {
  return table([
    ["Gate", (t) => h("code", { text: t.gate })],
    ["Decision", (t) => badge(t.decision, t.decision === "allow" ? "ok" : "bad")],
    ["Code", (t) => t.code || "—"],
    ["Reason", (t) => t.reason || "—"],
  ], trace || [], { id: "trace-table", empty: "No gate ran." });
}

function show(result) {
  $("#result").hidden = false;
  fill($("#result-badge"), result.ok ? badge("allowed, ran", "ok") : badge("refused or failed", "bad"));
  const pairs = [["Tool", result.tool], ["Audit record", result.audit_seq === null ? null : String(result.audit_seq)],
    ["Request id", result.request_id]];
  if (result.upstream) {
    const where = { live: "yes, the live upstream (read-only)", sandbox: "yes, its sandbox target", none: "no (the call it would make is shown)" };
    pairs.push(["Upstream", `${result.upstream.name} / ${result.upstream.tool}`]);
    pairs.push(["Upstream contacted", where[result.upstream.contacted] || String(result.upstream.contacted)]);
  }
  if (result.error) pairs.push(["Error", `${result.error.code}: ${result.error.message}`]);
  facts($("#result-facts"), pairs);
  fill($("#trace"), traceTable(result.trace));
  $("#output").textContent = result.ok ? pretty(result.output) : pretty(result.error);
}

async function run(ev) {
  ev.preventDefault();
  const body = { tool: $("#tool").value.trim(), arguments: parseJson($("#arguments").value, "Arguments") ?? {} };
  const mock = mockPolicy();
  if (mock) body.mock_policy = mock;
  const draftId = $("#draft-id").value.trim();
  if (draftId) body.draft_id = draftId;
  const version = $("#draft-version").value.trim();
  if (draftId && version) body.draft_version = Number(version);
  const result = await api("POST", "/v1/sandbox/run", body);
  show(result);
  say(result.ok ? "The run was allowed." : "The run was refused or failed: the trace says where.", result.ok ? "ok" : "error");
}

$("#tool").addEventListener("change", () => {
  const schema = schemas.get($("#tool").value.trim());
  if (schema && $("#arguments").value.trim() === "{}") $("#arguments").value = pretty(skeleton(schema));
});
$("#draft-id").addEventListener("change", () => loadDraftOperations($("#draft-id").value.trim()).catch(sayError));
$("#run-form").addEventListener("submit", (ev) => run(ev).catch(sayError));

const wanted = new URLSearchParams(window.location.search).get("draft");
loadOperations().then(() => {
  if (wanted) { $("#draft-id").value = wanted; return loadDraftOperations(wanted); }
  return undefined;
}).catch(sayError);
