import { ApiError, enc, get } from "../api.js";
import { $, badge, fill, h, pretty, say, sayError, table } from "../dom.js";

function annotationBadges(op) {
  const a = op.annotations || {};
  const out = [];
  if (a.readOnlyHint) out.push(badge("read-only", "ok"));
  if (a.destructiveHint) out.push(badge("destructive", "warn"));
  if (a.idempotentHint) out.push(badge("idempotent"));
  if (a.openWorldHint) out.push(badge("open world"));
  return out;
}

function kpiBadges(kpis) {
  if (!kpis.length) return h("span", { class: "muted", text: "no KPI bound" });
  return kpis.map((k) => badge(`${k.kpi_id}: ${k.status}`, k.status === "ok" ? "ok" : k.status === "breach" ? "bad" : ""));
}

function toolCard(tool, kpis, down, approvals) {
  const kind = tool.builtin ? badge("built-in") : badge("published", "info");
  const state = down ? badge("down", "bad") : badge("live", "ok");
  return h("article", { class: "card tool", id: `tool-${tool.tool_id}` },
    h("header", {}, h("h2", {}, tool.title || tool.tool_id, " ", h("code", { text: tool.tool_id })), kind, state,
      tool.version ? h("span", { class: "muted", text: ` v${tool.version}` }) : null),
    tool.description ? h("p", { text: tool.description }) : null,
    h("p", { class: "kpis" }, h("strong", { text: "KPIs " }), kpiBadges(kpis)),
    table([
      ["Scope", (s) => h("code", { text: s.name })],
      ["Firearm", (s) => (s.firearm ? badge(s.firearm, "warn") : badge("open", "ok"))],
      ["Approval", (s) => (approvals.has(s.name) ? badge(`required: ${approvals.get(s.name)}`, "warn") : "")],
      ["Operations", (s) => h("ul", { class: "ops" }, s.operations.map((op) => h("li", {},
        h("code", { text: op.wire_name }), " ", annotationBadges(op),
        op.description ? h("div", { class: "muted", text: op.description }) : null)))],
    ], tool.scopes || [], { empty: "No scopes." }),
    tool.package_hash ? h("p", { class: "muted small" }, "package ", h("code", { text: tool.package_hash })) : null);
}

async function kpisOf(toolId) {
  try {
    return (await get(`/v1/kpi/status/${enc(toolId)}`)).kpis || [];
  } catch {
    return [];
  }
}

async function loadTools() {
  const [inventory, health, rules] = await Promise.all([get("/v1/tools"), get("/health").catch((e) => e.body || {}),
    get("/v1/firearms/approvals").catch(() => ({ rules: [] }))]);
  const down = new Set((health && health.tools_down) || []);
  const approvals = new Map((rules.rules || []).map((r) => [r.scope, r.approver_firearm]));
  const tools = inventory.tools || [];
  const kpis = await Promise.all(tools.map((t) => kpisOf(t.tool_id)));
  fill($("#tools"), tools.map((t, i) => toolCard(t, kpis[i], down.has(t.tool_id), approvals)));
  say(`${tools.length} tools.`);
}

function upstreamRows(body) {
  if (Array.isArray(body)) return body;
  return (body && (body.upstreams || body.items)) || [];
}

function stateBadge(state) {
  const kind = { ready: "ok", connecting: "info", backoff: "warn", open: "bad", stopped: "bad" }[state] || "";
  return badge(state || "unknown", kind);
}

function driftText(drift) {
  if (!drift) return badge("no drift", "ok");
  const parts = ["changed", "removed", "added"].filter((k) => (drift[k] || []).length)
    .map((k) => `${k}: ${drift[k].join(", ")}`);
  return parts.length ? badge(parts.join("; "), "bad") : badge("no drift", "ok");
}

async function showUpstream(name) {
  const el = $("#upstream-detail");
  try {
    const detail = await get(`/v1/upstreams/${enc(name)}`);
    fill(el, h("article", { class: "card" }, h("h3", {}, "Upstream ", h("code", { text: name })), h("pre", { text: pretty(detail) })));
  } catch (err) {
    fill(el, h("p", { class: "error", text: err.message }));
  }
}

async function loadUpstreams() {
  // Federation's routes arrive with it: ask the API's own document first (no 404 to log),
  // then the route itself; a 404 from it hides the section all the same.
  const doc = await get("/openapi.json");
  if (!doc || !doc.paths || !("/v1/upstreams" in doc.paths)) return;
  let body;
  try {
    body = await get("/v1/upstreams");
  } catch (err) {
    // Until federation serves these routes they answer 404: the section stays hidden.
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return;
    throw err;
  }
  $("#upstreams").hidden = false;
  const rows = upstreamRows(body);
  fill($("#upstream-list"), table([
    ["Name", (u) => h("button", { class: "link", type: "button", text: u.name, onclick: () => showUpstream(u.name) })],
    ["Transport", (u) => u.transport || (u.status && u.status.transport) || "—"],
    ["Connection", (u) => stateBadge(u.state || (u.status && u.status.state))],
    ["Tools", (u) => String(u.tool_count ?? (u.status && u.status.tool_count) ?? "—")],
    ["Drift", (u) => driftText(u.drift ?? (u.status && u.status.drift))],
    ["Last error", (u) => u.last_error || (u.status && u.status.last_error) || "—"],
  ], rows, { id: "upstream-table", empty: "No upstream is registered." }));
}

loadTools().catch(sayError);
loadUpstreams().catch(sayError);
