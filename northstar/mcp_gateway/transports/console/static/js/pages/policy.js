import { api, enc, get } from "../api.js";
import { $, badge, fill, h, isoFromLocal, say, sayError, table, when } from "../dom.js";

async function loadBindings() {
  const { bindings } = await get("/v1/firearms/bindings");
  fill($("#bindings"), table([
    ["Scope", (b) => h("code", { text: b.scope })],
    ["Firearm", (b) => (b.firearm ? badge(b.firearm, "warn") : badge("open", "ok"))],
    ["", (b) => h("button", { type: "button", class: "unbind", text: "Unbind", onclick: () => act(
      () => api("DELETE", `/v1/firearms/bindings/${enc(b.scope)}`), `${b.scope} is open again.`) })],
  ], bindings, { id: "binding-table", empty: "No scope is bound." }));
}

async function loadRules() {
  const { rules } = await get("/v1/firearms/approvals");
  fill($("#approval-rules"), table([
    ["Scope", (r) => h("code", { text: r.scope })],
    ["Approver firearm", (r) => badge(r.approver_firearm, "warn")],
    ["", (r) => h("button", { type: "button", class: "clear-approval", text: "No approval", onclick: () => act(
      () => api("DELETE", `/v1/firearms/approvals/${enc(r.scope)}`), `${r.scope} runs without approval again.`) })],
  ], rules, { id: "approval-rule-table", empty: "No scope requires approval." }));
}

async function loadGrants() {
  const { grants } = await get("/v1/firearms/grants");
  fill($("#grants"), table([
    ["Tenant", (g) => g.tenant],
    ["User", (g) => g.user],
    ["Firearm", (g) => badge(g.firearm, "warn")],
    ["Granted", (g) => `${when(g.granted_at)} by ${g.granted_by || "—"}`],
    ["Expires", (g) => (g.expires_at ? [when(g.expires_at), " ", g.active === false ? badge("expired", "bad") : badge("active", "ok")] : "never")],
    ["Reason", (g) => g.reason || "—"],
    ["", (g) => h("button", { type: "button", class: "revoke", text: "Revoke", onclick: () => act(
      () => api("DELETE", `/v1/firearms/grants/${enc(g.tenant)}/${enc(g.user)}/${enc(g.firearm)}`),
      `${g.firearm} revoked from ${g.tenant}/${g.user}.`) })],
  ], grants, { id: "grant-table", empty: "No grant." }));
}

async function act(call, done) {
  try {
    await call();
    say(done, "ok");
    await Promise.all([loadBindings(), loadRules(), loadGrants()]);
  } catch (err) { sayError(err); }
}

$("#bind-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const scope = $("#bind-scope").value.trim(), firearm = $("#bind-firearm").value.trim();
  act(() => api("PUT", `/v1/firearms/bindings/${enc(scope)}`, { firearm }), `${scope} now needs ${firearm}.`);
});
$("#grant-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = { tenant: $("#grant-tenant").value.trim(), user: $("#grant-user").value.trim(), firearm: $("#grant-firearm").value.trim() };
  const expires = isoFromLocal($("#grant-expires").value);
  if (expires) body.expires_at = expires;
  const reason = $("#grant-reason").value.trim();
  if (reason) body.reason = reason;
  act(() => api("POST", "/v1/firearms/grants", body), `${body.firearm} granted to ${body.tenant}/${body.user}.`);
});
$("#approval-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const scope = $("#approval-scope").value.trim(), approver = $("#approval-firearm").value.trim();
  act(() => api("PUT", `/v1/firearms/approvals/${enc(scope)}`, approver ? { approver_firearm: approver } : {}),
    `${scope} now requires approval.`);
});
Promise.all([loadBindings(), loadRules(), loadGrants()]).catch(sayError);
