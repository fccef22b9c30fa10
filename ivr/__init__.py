"""Pay-by-phone line for billers: a Flask app driven by Twilio webhooks.

The tree, by concern: ``calls`` (the call, no Flask), ``prompts`` (wording and line
settings), ``money`` (payments, posting, reconciliation), ``accounts`` (cache, imports, file
exchange), ``web`` (the Flask app), ``ops`` (the console), ``simulator``, ``cli``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``ivr:create_app()`` keeps working for WSGI servers without importing Flask here.
    if name in {"create_app", "get_config", "get_database", "get_deadlines"}:
        from ivr.web import app

        return getattr(app, name)
    raise AttributeError(name)
