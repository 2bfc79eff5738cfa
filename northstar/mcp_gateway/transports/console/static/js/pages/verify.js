import { get } from "../api.js";
import { $, badge, facts, say, sayError } from "../dom.js";

async function verify() {
  say("Walking the chain…");
  const r = await get("/v1/audit/verify");
  $("#report").hidden = false;
  $("#report-badge").replaceChildren(r.ok ? badge("intact", "ok") : badge("broken", "bad"));
  facts($("#report-facts"), [
    ["Result", r.ok ? "ok" : "NOT ok"], ["Records walked", String(r.count)],
    ["First bad record", r.first_bad_seq === null ? null : String(r.first_bad_seq)], ["Reason", r.reason],
    ["Head sealed", r.sealed === undefined ? null : r.sealed ? "yes, the seal holds" : "no"],
    ["Anchors matched", r.anchors === undefined ? null : String(r.anchors)],
    ["Newest anchor", r.anchored_seq === null || r.anchored_seq === undefined ? null : String(r.anchored_seq)],
  ]);
  say(r.ok ? `The chain of ${r.count} records verifies.` : `The chain is broken at ${r.first_bad_seq}.`, r.ok ? "ok" : "error");
}

$("#verify").addEventListener("click", () => verify().catch(sayError));
verify().catch(sayError);
