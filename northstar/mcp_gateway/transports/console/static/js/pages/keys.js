import { api, enc, get } from "../api.js";
import { $, badge, fill, h, say, sayError, table, when } from "../dom.js";

async function load() {
  const { keys } = await get("/v1/keys");
  fill($("#keys"), table([
    ["Key id", (k) => h("code", { text: k.key_id })],
    ["Principal", (k) => `${k.tenant}/${k.user}`],
    ["Admin", (k) => (k.admin ? badge("admin", "warn") : "")],
    ["Label", (k) => k.label || ""],
    ["Created", (k) => when(k.created_at)],
    ["Provenance", (k) => [k.provenance || "—", k.confirmed === false ? [" ", badge("not confirmed", "bad")] : ""]],
    ["", (k) => h("button", { type: "button", class: "revoke", "data-key-id": k.key_id, text: "Revoke", onclick: () => revoke(k) })],
  ], keys, { id: "key-table", empty: "No key." }));
}

async function revoke(key) {
  if (!window.confirm(`Revoke key ${key.key_id} of ${key.tenant}/${key.user}? It stops working at once.`)) return;
  try {
    await api("DELETE", `/v1/keys/${enc(key.key_id)}`);
    say(`Key ${key.key_id} revoked.`, "ok");
    await load();
  } catch (err) { sayError(err); }
}

$("#key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { tenant: $("#key-tenant").value.trim(), user: $("#key-user").value.trim(), admin: $("#key-admin").checked };
  const label = $("#key-label").value.trim();
  if (label) body.label = label;
  try {
    const created = await api("POST", "/v1/keys", body);
    $("#new-key-secret").textContent = created.key;
    $("#new-key").hidden = false;
    say(`Key ${created.key_id} created for ${created.tenant}/${created.user}.`, "ok");
    await load();
  } catch (err) { sayError(err); }
});
$("#new-key-done").addEventListener("click", () => {
  // The secret leaves the page: it is shown once.
  $("#new-key-secret").textContent = "";
  $("#new-key").hidden = true;
});
load().catch(sayError);
