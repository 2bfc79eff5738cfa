import { get, query } from "../api.js";
import { $, badge, fill, h, isoFromLocal, pretty, say, sayError, table, when } from "../dom.js";

let cursor = null;
let filters = {};

function readFilters() {
  const val = (sel) => ($(sel) ? $(sel).value.trim() : "");
  return { tenant: val("#f-tenant"), user: val("#f-user"), tool: val("#f-tool"), decision: val("#f-decision"),
    since: isoFromLocal(val("#f-since")), until: isoFromLocal(val("#f-until")) };
}

function detail(entry) {
  $("#detail").hidden = false;
  $("#detail-title").textContent = `Record ${entry.seq}`;
  $("#detail-json").textContent = pretty(entry);
}

function outcomeOf(e) {
  if (e.outcome) return badge(e.outcome, e.outcome === "ok" ? "ok" : "bad");
  return "—";
}

async function load(reset) {
  if (reset) cursor = null;
  const page = await get(`/v1/audit${query({ ...filters, after_seq: cursor, limit: 50 })}`);
  fill($("#entries"), table([
    ["Seq", (e) => h("button", { type: "button", class: "link", text: String(e.seq), onclick: () => detail(e) })],
    ["When", (e) => when(e.ts)],
    ["Event", (e) => [e.event || "—", e.sandbox ? [" ", badge("sandbox", "info")] : ""]],
    ["Decision", (e) => (e.decision ? badge(e.decision, e.decision === "allow" ? "ok" : "bad") : "—")],
    ["Outcome", outcomeOf],
    ["Tool", (e) => e.canonical_name || e.tool || "—"],
    ["Principal", (e) => e.principal || (e.tenant ? `${e.tenant}/${e.user}` : "—")],
    ["Code", (e) => e.code || e.action || "—"],
  ], page.entries, { id: "audit-table", empty: "No record matches." }));
  cursor = page.next_after_seq;
  $("#next").hidden = cursor === null || cursor === undefined;
  say(`${page.entries.length} records${cursor ? " (more on the next page)" : ""}.`);
}

$("#filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  filters = readFilters();
  load(true).catch(sayError);
});
$("#next").addEventListener("click", () => load(false).catch(sayError));
load(true).catch(sayError);
