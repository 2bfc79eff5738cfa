"""A real upstream built with FastMCP (PyPI ``fastmcp``), the framework most servers use.

    python fast.py          # stdio
"""

from __future__ import annotations

from fastmcp import Context, FastMCP

mcp = FastMCP("fast-upstream")


@mcp.tool(annotations={"readOnlyHint": True})
def search_docs(query: str, limit: int = 5) -> list[str]:
    """Search the documentation."""
    return [f"{query} #{n}" for n in range(limit)]


@mcp.tool(annotations={"readOnlyHint": False, "destructiveHint": True})
def drop_index(name: str) -> str:
    """Drop a search index."""
    return f"dropped {name}"


@mcp.tool(annotations={"readOnlyHint": True})
async def crunch(steps: int, ctx: Context) -> str:
    """Crunch numbers, reporting progress."""
    for n in range(steps):
        await ctx.report_progress(n + 1, steps)
    return f"crunched {steps}"


if __name__ == "__main__":
    mcp.run(show_banner=False)
