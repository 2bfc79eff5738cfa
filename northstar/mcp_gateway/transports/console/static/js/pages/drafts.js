import { enc, get, query } from "../api.js";
import { $, fill, h, say, sayError, table, when } from "../dom.js";

let after = null;
const rows = [];

async function load() {
  const page = await get(`/v1/drafts${query({ after, limit: 100 })}`);
  rows.push(...page.drafts);
  after = page.next_after;
  $("#more").hidden = !after;
  fill($("#drafts"), table([
    ["Draft", (d) => h("a", { href: `/console/drafts/${enc(d.draft_id)}`, text: d.draft_id })],
    ["Version", (d) => String(d.version)],
    ["Tool", (d) => (d.spec && d.spec.tool_id) || "—"],
    ["Title", (d) => (d.spec && d.spec.title) || ""],
    ["Saved", (d) => when(d.created_at)],
    ["By", (d) => d.actor || "—"],
  ], rows, { id: "draft-table", empty: "No draft yet: create one above." }));
  say(`${rows.length} drafts.`);
}

$("#new-draft").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("#new-draft-id").value.trim();
  if (id) window.location.assign(`/console/drafts/${enc(id)}`);
});
$("#more").addEventListener("click", () => load().catch(sayError));
load().catch(sayError);
