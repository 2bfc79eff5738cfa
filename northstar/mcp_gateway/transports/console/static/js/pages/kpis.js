import { api, enc, get } from "../api.js";
import { sparkline } from "../chart.js";
import { $, badge, fill, h, say, sayError } from "../dom.js";

const fmt = (v, metric) => (v === null || v === undefined ? "no data"
  : metric === "error_rate" ? `${(v * 100).toFixed(1)} %` : metric === "calls" ? String(v) : `${v.toFixed(1)} ms`);

function card(toolId, k) {
  const kind = k.status === "ok" ? "ok" : k.status === "breach" ? "bad" : "";
  const op = k.comparison === "gte" ? "≥" : "≤";
  return h("article", { class: "card kpi", "data-kpi": `${toolId}/${k.kpi_id}` },
    h("header", {}, h("h3", {}, h("code", { text: toolId }), " ", k.kpi_id), badge(k.status, kind)),
    h("p", {}, `${k.metric} over ${k.window}: `, h("strong", { text: fmt(k.value, k.metric) }),
      ` (target ${op} ${fmt(k.target, k.metric)}, ${k.samples} calls)`),
    sparkline(k.series || [], { target: k.target, label: `${k.metric} over ${k.window}, in ${(k.series || []).length} slices` }));
}

async function load() {
  const { tools } = await get("/v1/tools");
  fill($("#kpi-tools"), tools.map((t) => h("option", { value: t.tool_id })));
  const statuses = await Promise.all(tools.map((t) => get(`/v1/kpi/status/${enc(t.tool_id)}`).catch(() => ({ kpis: [] }))));
  const cards = statuses.flatMap((s, i) => (s.kpis || []).map((k) => card(tools[i].tool_id, k)));
  fill($("#kpis"), cards.length ? cards : h("p", { class: "muted", text: "No KPI is bound yet." }));
  say(`${cards.length} KPI bindings.`);
}

$("#kpi-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tool = $("#kpi-tool").value.trim(), kpiId = $("#kpi-id").value.trim();
  const body = { metric: $("#kpi-metric").value, target: Number($("#kpi-target").value), window: $("#kpi-window").value.trim(),
    owner: $("#kpi-owner").value.trim() };
  try {
    await api("PUT", `/v1/kpi/bindings/${enc(tool)}/${enc(kpiId)}`, body);
    say(`${tool}/${kpiId} bound.`, "ok");
    await load();
  } catch (err) { sayError(err); }
});
load().catch(sayError);
