import { api, enc, get, query } from "../api.js";
import { $, badge, fill, h, pretty, say, sayError, table, when } from "../dom.js";

const KIND = { pending: "warn", approved: "ok", consumed: "ok", rejected: "bad", expired: "bad" };

async function load() {
  const state = $("#f-state").value;
  const { approvals } = await get(`/v1/approvals${query(state ? { state } : {})}`);
  fill($("#approvals"), table([
    ["Approval", (a) => h("code", { text: a.id })],
    ["State", (a) => badge(a.state, KIND[a.state] || "")],
    ["Caller", (a) => a.principal],
    ["Tool", (a) => [h("code", { text: a.tool || "" }), " ", h("small", { text: a.scope || "" })]],
    ["Arguments", (a) => h("pre", { class: "arguments", text: pretty(a.arguments) })],
    ["Expires", (a) => when(a.expires_at)],
    ["Decided", (a) => (a.decided_by ? `${a.decided_by}${a.reason ? `: ${a.reason}` : ""}` : "")],
    ["", (a) => (a.state === "pending" ? [
      h("button", { type: "button", class: "approve", "data-id": a.id, text: "Approve", onclick: () => decide(a, "approve") }),
      " ",
      h("button", { type: "button", class: "reject", "data-id": a.id, text: "Reject", onclick: () => decide(a, "reject") }),
    ] : "")],
  ], approvals, { id: "approval-table", empty: "No approval.", rowAttrs: (a) => ({ id: `approval-${a.id}` }) }));
}

async function decide(approval, action) {
  const reason = $("#reason").value.trim();
  try {
    // The same REST API as any client; the console's session adds the CSRF token.
    const done = await api("POST", `/v1/approvals/${enc(approval.id)}/${action}`, reason ? { reason } : {});
    say(`Approval ${done.id} ${done.state}.`, "ok");
    await load();
  } catch (err) { sayError(err); }
}

$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); load().catch(sayError); });
load().catch(sayError);
