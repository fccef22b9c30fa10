"""Call pages: the funnel per state, conversion, time to pay, stuck questions, one call."""

from __future__ import annotations

import re

from flask import abort, render_template, request

from ivr.ops import funnel
from ivr.ops.base import bp, choose_period, database, store
from ivr.ops.charts import Bar, bar_chart, percent
from ivr.ops.present import seconds_text
from ivr.ops.prompt_usage import STATE_QUESTIONS
from ivr.statuses import CallOutcome

_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
OUTCOMES = ("", *CallOutcome, "in_progress")


@bp.get("/calls")
def calls() -> tuple[str, int]:
    """Where callers get stuck, for a period and language."""
    languages = store().get().settings.languages
    choice = choose_period(request.args, languages)
    outcome = request.args.get("outcome", "")
    if outcome not in OUTCOMES:
        choice.errors.append(f"Unknown outcome {outcome[:20]!r}; showing all calls.")
        outcome = ""
    with database().session() as db:
        rows = funnel.state_funnel(db, choice.period)
        conversion = funnel.conversion(db, choice.period)
        paying = funnel.time_to_pay(db, choice.period)
        recent = funnel.recent_calls(db, choice.period, outcome=outcome or None)
        outcomes = funnel.outcomes(db, choice.period)
    stuck = funnel.stuck_questions(rows)
    reached = [r for r in rows if r.reached]
    funnel_chart = bar_chart(
        "funnel", "Calls reaching and passing each state",
        "For each state, the light bar is calls that reached it and the dark part calls "
        "that answered it; the numbers follow each bar.",
        [Bar(r.state, r.reached, r.passed, f"{r.reached} reached, {r.passed} passed")
         for r in reached])
    steps = conversion.steps()
    conversion_chart = bar_chart(
        "conversion", "Conversion from call to payment",
        "Calls, then how many were identified, verified, reached secure payment and paid.",
        [Bar(label, count, None, f"{count} ({percent(count, conversion.calls)})")
         for label, count in steps])
    pay_chart = bar_chart(
        "time-to-pay", "Time from the start of the call to the payment",
        f"{paying.count} paid calls, grouped by how long they took.",
        [Bar(label, count) for label, count in paying.buckets])
    return render_template(
        "ops/calls.html", title="Calls", choice=choice, languages=languages, rows=rows,
        conversion=conversion, steps=steps, paying=paying, recent=recent, outcomes=outcomes,
        outcome=outcome, outcome_choices=OUTCOMES,
        worst_noinput=funnel.worst(stuck, "noinput_rate"),
        worst_nomatch=funnel.worst(stuck, "nomatch_rate"), funnel_chart=funnel_chart,
        conversion_chart=conversion_chart, pay_chart=pay_chart, seconds_text=seconds_text,
    ), 400 if choice.errors else 200


@bp.get("/calls/<call_sid>")
def call(call_sid: str) -> str:
    """One call's path: states and outcomes only, never what was typed."""
    if not _SID.fullmatch(call_sid):
        abort(404)
    with database().session() as db:
        session, steps = funnel.call_path(db, call_sid)
        if session is None:
            abort(404)
        account = session.account.account_number if session.account else None
    return render_template("ops/call.html", title=f"Call {call_sid}", call=session,
                           steps=steps, account=account, questions=STATE_QUESTIONS)
