import { api, enc, get } from "../api.js";
import { $, badge, facts, fill, h, say, sayError, table, when } from "../dom.js";

function artifacts(result) {
  $("#artifacts").hidden = false;
  const p = result.package || {}, o = result.overlay || {};
  facts($("#package"), [["Id", p.id], ["Tool", p.tool_id], ["Version", p.version], ["Content hash", h("code", { text: p.content_hash || "" })]]);
  facts($("#overlay"), [["Id", o.id], ["Tool", o.tool_id], ["Overlay version", String(o.version ?? "")],
    ["Package version", o.package_version], ["Package hash", h("code", { text: o.package_hash || "" })],
    ["Active", o.active === false ? badge("inactive", "bad") : badge("active", "ok")]]);
}

async function loadDrafts() {
  const page = await get("/v1/drafts?limit=500");
  const wanted = new URLSearchParams(window.location.search).get("draft");
  fill($("#draft"), page.drafts.map((d) => h("option", { value: d.draft_id, selected: d.draft_id === wanted,
    text: `${d.draft_id} (version ${d.version})` })));
  const ids = [...new Set(page.drafts.map((d) => d.spec && d.spec.tool_id).filter(Boolean))];
  fill($("#tool-ids"), ids.map((id) => h("option", { value: id })));
}

async function showTool(toolId) {
  const [overlay, packages] = await Promise.all([get(`/v1/overlays/${enc(toolId)}`), get(`/v1/registry/packages/${enc(toolId)}`)]);
  const current = overlay.current || {};
  fill($("#tool-view"),
    h("p", {}, "Live: ", current.active === false ? badge("unpublished", "bad") : badge(`package ${current.package_version}`, "ok"), " ",
      h("button", { type: "button", id: "unpublish", text: "Unpublish", onclick: () => unpublish(toolId) })),
    h("h3", { text: "Packages" }),
    table([
      ["Version", (p) => p.version],
      ["Content hash", (p) => h("code", { text: (p.content_hash || "").slice(0, 16) + "…" })],
      ["Published", (p) => when(p.published_at || p.created_at)],
      ["", (p) => (p.version === current.package_version && current.active !== false ? h("span", { class: "muted", text: "live" })
        : h("button", { type: "button", class: "rollback", "data-version": p.version, text: `Roll back to ${p.version}`,
          onclick: () => rollback(toolId, p.version) }))],
    ], packages.packages || [], { id: "package-table" }),
    h("h3", { text: "Overlay history" }),
    table([
      ["Overlay", (o) => String(o.version ?? "")],
      ["Action", (o) => o.action || "—"],
      ["Package", (o) => o.package_version || "—"],
      ["When", (o) => when(o.created_at || o.at)],
    ], overlay.history || [], { id: "overlay-table" }));
}

async function rollback(toolId, version) {
  try {
    const result = await api("POST", `/v1/overlays/${enc(toolId)}/rollback`, { version });
    artifacts(result);
    say(`${toolId} now serves package ${version}.`, "ok");
    await showTool(toolId);
  } catch (err) { sayError(err); }
}

async function unpublish(toolId) {
  if (!window.confirm(`Unpublish ${toolId}? Its packages are kept; a rollback brings it back.`)) return;
  try {
    await api("DELETE", `/v1/overlays/${enc(toolId)}`);
    say(`${toolId} left the catalogue.`, "ok");
    await showTool(toolId);
  } catch (err) { sayError(err); }
}

$("#publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const draftId = $("#draft").value;
  const version = $("#version").value.trim();
  try {
    const result = await api("POST", `/v1/drafts/${enc(draftId)}/publish`, version ? { version: Number(version) } : {});
    artifacts(result);
    say(`Published ${result.package.tool_id} ${result.package.version}.`, "ok");
    $("#tool-id").value = result.package.tool_id;
    await showTool(result.package.tool_id);
  } catch (err) { sayError(err); }
});
$("#tool-form").addEventListener("submit", (ev) => { ev.preventDefault(); showTool($("#tool-id").value.trim()).catch(sayError); });
loadDrafts().catch(sayError);
