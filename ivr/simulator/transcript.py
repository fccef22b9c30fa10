"""What happened on a call: transcript events, their one-line form, and the result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field


def format_event(event: Mapping[str, object]) -> str | None:
    """One transcript event as a line for people (None for events not worth a line)."""
    kind = event.get("event")
    if kind == "say":
        return f"IVR: {event.get('text', '')}"
    if kind == "play":
        return f"IVR: [plays audio {event.get('url', '')}]"
    if kind == "press":
        return f"CALLER: pressed {event.get('digits') or '(no digits)'}"
    if kind == "silence":
        return "CALLER: (silence)"
    if kind == "pay":
        parts = [str(event.get(k)) for k in ("method", "amount", "card", "account")
                 if event.get(k)]
        outcome = [str(event.get(k)) for k in ("result", "confirmation", "error") if event.get(k)]
        return f"[payment {' '.join(parts)}: {' '.join(outcome)}]"
    if kind == "dial":
        return f"[transfers the call to {event.get('number')}]"
    if kind == "hangup":
        who = "the caller" if event.get("by") == "caller" else "the line"
        return f"[call ended by {who}]"
    if kind == "error":
        return (f"[application error (HTTP {event.get('status')}): {event.get('detail')}; "
                "Twilio would say 'An application error has occurred' and hang up]")
    return None


@dataclass
class CallResult:
    """What happened on one simulated call."""

    call_sid: str
    events: list[dict[str, object]]
    ended_by: str
    # HTTP status of the final call status callback (None when none was posted).
    status_callback_status: int | None = field(default=None)

    def said(self) -> str:
        """Everything the line said, one <Say> per line."""
        return "\n".join(str(e["text"]) for e in self.events if e.get("event") == "say")

    def to_json(self) -> str:
        """The result as JSON."""
        return json.dumps({"call_sid": self.call_sid, "ended_by": self.ended_by,
                           "status_callback_status": self.status_callback_status,
                           "events": self.events}, indent=2)
