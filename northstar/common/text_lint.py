"""Lint of text a model will read: hidden Unicode and injected instructions (pure, no I/O).

Tool titles and descriptions (a draft's, and an upstream MCP server's) are shown to the model
verbatim, which makes them a channel for prompt injection ("tool poisoning").
:func:`lint_text` reports text that contains either of:

Hidden Unicode (any occurrence)
    * zero-width and invisible: U+200B-U+200F, U+2060-U+2064, U+FEFF
    * bidirectional controls: U+202A-U+202E, U+2066-U+2069
    * tag characters: U+E0000-U+E007F (they can spell invisible ASCII)
    * supplementary variation selectors: U+E0100-U+E01EF (used to smuggle bytes)
    * any other format (Cf) or private-use (Co) character, and control characters (Cc)
      other than tab, line feed and carriage return

Injected instructions (case-insensitive, after NFKC normalisation and whitespace folding)
    * ``ignore (all|any) (the) previous|prior|above|earlier|preceding instructions|prompts|rules``
    * ``disregard ... instructions|prompts|rules|guidelines|directions``
    * ``forget (all|everything) ... instructions|you were told``
    * ``<important>``, ``<system>``, ``<instructions>``, ``<secret>`` tags and ``<!--`` comments
    * ``system prompt``
    * ``you must always`` / ``you must never``
    * ``do not|don't tell|inform|mention|reveal ... the user``, ``without telling the user``
    * ``send|post|upload|forward|transmit|exfiltrate ... to http(s)://`` (exfiltration hints)
    * ``before using this tool``
    * ``conversation history`` / ``chat history``
    * ``new instructions:`` / ``updated instructions:``
    * ``override (the|your|all) ... instructions|rules|safety|system``
    * ``act as|pretend to be (an) admin|administrator|root|system|developer``
    * references to secrets on disk: ``~/.ssh``, ``id_rsa``, ``/etc/passwd``, ``.env`` files

Each problem is ``{"path": <the JSON pointer it was given>, "message": ...}``. The workbench
(:mod:`northstar.workbench.lint`) walks a draft spec with it; federation walks an upstream's
tool definitions (:mod:`northstar.upstreams.pins`).
"""

from __future__ import annotations

import re
import unicodedata

Problem = dict[str, str]

_HIDDEN_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x200B, 0x200F, "zero-width character"),
    (0x2060, 0x2064, "invisible character"),
    (0xFEFF, 0xFEFF, "zero-width no-break space"),
    (0x202A, 0x202E, "bidirectional control"),
    (0x2066, 0x2069, "bidirectional isolate"),
    (0xE0000, 0xE007F, "tag character"),
    (0xE0100, 0xE01EF, "variation selector"),
)
_ALLOWED_CONTROLS = frozenset("\t\n\r")

INJECTION_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bignore\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|preceding)\s+"
     r"(?:instructions?|prompts?|messages?|rules|directions)", "asks to ignore previous instructions"),
    (r"\bdisregard\b.{0,60}?\b(?:instructions?|prompts?|rules|guidelines|directions)\b",
     "asks to disregard instructions"),
    (r"\bforget\s+(?:all\s+|everything\s+)?.{0,40}?\b(?:instructions?|you\s+(?:were|have\s+been)\s+told)\b",
     "asks to forget instructions"),
    (r"<\s*/?\s*(?:important|system|instructions?|secret)\s*>", "contains a pseudo-markup instruction tag"),
    (r"<!--", "contains a hidden HTML comment"),
    (r"\bsystem\s+prompt\b", "mentions the system prompt"),
    (r"\byou\s+must\s+(?:always|never)\b", "gives the model standing orders (you must always/never)"),
    (r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention|reveal|show|notify)\b.{0,40}?\bthe\s+user\b",
     "asks to hide something from the user"),
    (r"\bwithout\s+(?:telling|informing|notifying|asking)\s+the\s+user\b", "asks to act behind the user's back"),
    (r"\b(?:send|post|upload|forward|transmit|exfiltrate|leak)\b.{0,80}?\bto\s+(?:https?|ftp)://",
     "hints at sending data to a URL"),
    (r"\bbefore\s+using\s+this\s+tool\b", "tells the model what to do before using the tool"),
    (r"\b(?:conversation|chat)\s+history\b", "mentions the conversation history"),
    (r"\b(?:new|updated|additional)\s+instructions\s*:", "introduces new instructions"),
    (r"\boverride\s+(?:the\s+|your\s+|all\s+)?.{0,30}?\b(?:instructions?|rules|safety|system)\b",
     "asks to override instructions"),
    (r"\b(?:act\s+as|pretend\s+to\s+be)\s+(?:an?\s+)?(?:admin|administrator|root|system|developer)\b",
     "asks the model to assume a privileged role"),
    (r"(?:~/\.ssh|\bid_rsa\b|/etc/passwd|(?:^|[\s/])\.env\b)", "refers to secrets on disk"),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE | re.DOTALL), why) for p, why in INJECTION_PATTERNS)


def hidden_kind(ch: str) -> str | None:
    """What kind of hidden character ``ch`` is, or None when it is visible text."""
    cp = ord(ch)
    for lo, hi, kind in _HIDDEN_RANGES:
        if lo <= cp <= hi:
            return kind
    category = unicodedata.category(ch)
    if category == "Cf":
        return "format character"
    if category == "Co":
        return "private-use character"
    if category == "Cc" and ch not in _ALLOWED_CONTROLS:
        return "control character"
    if category == "Cs":
        return "surrogate"
    return None


def _hidden(path: str, text: str) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for offset, ch in enumerate(text):
        kind = hidden_kind(ch)
        if kind is not None and kind not in seen:
            seen.add(kind)
            problems.append({"path": path, "message": f"hidden Unicode: {kind} U+{ord(ch):04X} at offset {offset}"})
    return problems


def _folded(text: str) -> str:
    """NFKC (full-width and compatibility forms fold to ASCII), hidden characters dropped,
    whitespace runs collapsed to one space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if hidden_kind(ch) is None or ch in _ALLOWED_CONTROLS)
    return re.sub(r"\s+", " ", text)


def lint_text(path: str, text: str) -> list[Problem]:
    """Problems in one piece of text shown to a model (empty when it is clean)."""
    problems = _hidden(path, text)
    folded = _folded(text)
    for pattern, why in _COMPILED:
        match = pattern.search(folded)
        if match is not None:
            problems.append({"path": path, "message": f"possible injected instruction: {why} "
                                                      f"({match.group(0)[:60]!r})"})
    return problems


