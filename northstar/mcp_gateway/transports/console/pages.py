"""The console's pages: where each lives, what it is called, and whether it needs an admin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Page:
    name: str  # the template (``<name>.html``) and the module (``static/js/pages/<name>.js``)
    path: str  # the Quart rule under /console
    title: str
    admin: bool = False  # the server answers 403 to anyone else: the page is refused, not hidden
    nav: bool = True


PAGES: tuple[Page, ...] = (
    Page("catalogue", "/console/", "Catalogue"),
    Page("drafts", "/console/drafts", "Workbench"),
    Page("editor", "/console/drafts/<draft_id>", "Draft", nav=False),
    Page("sandbox", "/console/sandbox", "Sandbox"),
    Page("publish", "/console/publish", "Publish", admin=True),
    Page("policy", "/console/policy", "Policy", admin=True),
    Page("keys", "/console/keys", "API keys", admin=True),
    Page("approvals", "/console/approvals", "Approvals"),
    Page("audit", "/console/audit", "Audit"),
    Page("verify", "/console/audit/verify", "Verify", admin=True),
    Page("kpis", "/console/kpis", "KPIs"),
)

ADMIN_PAGES = tuple(p for p in PAGES if p.admin)
