"""Webhook routes Twilio calls. Thin: check the signature, load the call, run the flow."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial, wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    after_this_request,
    current_app,
    request,
    send_from_directory,
)
from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER
from twilio.twiml.voice_response import VoiceResponse

from connectors.phones import mask_phone, normalize_e164
from ivr.accounts.cache import phone_ahead
from ivr.calls import machine
from ivr.calls.call_row import load_call, new_call, save_call
from ivr.calls.context import CallContext
from ivr.calls.menu import Event
from ivr.calls.states import ENDED
from ivr.calls.steps import Ask, Hangup, Silent, Speech, Step
from ivr.calls.twiml import TwimlBuilder, twiml_text
from ivr.db_driver import ReadAhead
from ivr.db_webhook import WebhookTransaction
from ivr.metrics import observe_webhook
from ivr.models import utcnow
from ivr.money.accounting import Accounting
from ivr.prompts.catalog import Catalog, PromptStore
from ivr.prompts.settings import LineSettings
from ivr.security import signature_problem, signed_url
from ivr.statuses import CallOutcome
from ivr.web.app import get_config, get_database, get_deadlines
from ivr.web.deadline import DeadlinePassed
from ivr.web.late_answer import socket_answer

FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
bp = Blueprint("voice", __name__, url_prefix="/voice")
log = logging.getLogger(__name__)

# Used only when the prompt catalog itself cannot be loaded: better than Twilio's
# "an application error has occurred".
_LAST_RESORT = ("We're sorry, we can't take your call right now. Please call again later.")
# NUL and the other C0/C1 control characters: no field Twilio sends carries them, and
# PostgreSQL refuses NUL in text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean(value: str) -> str:
    """``value`` without control characters."""
    return _CONTROL.sub("", value)


def webhook_form() -> dict[str, str]:
    """The webhook's form values, cleaned of control characters.

    Only after the signature check, which must see the form exactly as Twilio signed it.
    Every route reads its fields from here, never from ``request.form``.
    """
    return {key: clean(value) for key, value in request.form.items()}


def twilio_signed(view: Callable[..., Response]) -> Callable[..., Response]:
    """Reject a request whose X-Twilio-Signature is missing or wrong with 403."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        config = get_config(current_app)
        if not config.allow_unsigned:
            headers = request.headers
            problem = signature_problem(
                current_app.extensions["ivr.signing_keys"], signed_url(config.base_url, request),
                request.form, headers.get(SIGNATURE_HEADER), headers.get(SIGNATURE_SETTINGS_HEADER))
            if problem:
                log.warning("rejected unsigned or badly signed webhook", extra={"fields": {
                    "path": request.path, "why": clean(problem),
                    "call_sid": clean(request.form.get("CallSid", "")[:64])}})
                abort(403)
        return view(*args, **kwargs)

    return wrapper


_XML_TYPE = "text/xml; charset=utf-8"


def _xml(body: str) -> Response:
    return Response(body, status=200, content_type=_XML_TYPE)


def _store() -> PromptStore:
    store: PromptStore = current_app.extensions["ivr.prompts.catalog"]
    return store


def _now() -> datetime:
    """The current time; tests replace ``ivr.clock`` to run calls at a chosen moment."""
    clock: Callable[[], datetime] = current_app.extensions.get("ivr.clock", utcnow)
    return clock()


def _accounting() -> Accounting | None:
    accounting: Accounting | None = current_app.extensions.get("ivr.money.accounting")
    return accounting


# The reads a webhook's work will ask, sent with the call's load (ivr.db_driver.ReadAhead):
# given the call SID, the line settings and the time.
Ahead = Callable[[str, LineSettings, datetime], Sequence[ReadAhead]]


def _nothing_ahead(_call_sid: str, _settings: LineSettings, _now: datetime) -> Sequence[ReadAhead]:
    return ()


def run_flow(route: str, action: Callable[[CallContext], Step], form: dict[str, str], *,
             create: bool = True, ahead: Ahead = _nothing_ahead) -> Response:
    """Load (or start) the call, run ``action`` in one transaction, answer TwiML, log one line.

    The TwiML is built inside the transaction: if building fails, the call's state is not
    advanced, and the caller hears an apology instead of Twilio's application error. The
    same apology answers when the work misses the webhook deadline (a frozen database).
    """
    started = time.monotonic()
    config = get_config(current_app)
    call_sid = form.get("CallSid", "").strip()[:64]
    try:
        catalog = _store().get()
    except Exception:
        log.exception("prompt catalog unavailable")
        return _xml(_last_resort())
    fields: dict[str, object] = {"route": route, "call_sid": call_sid, "state": "", "outcome": "ok"}
    if config.allow_unsigned:
        fields["unsigned"] = True
    lang = catalog.settings.default_language
    try:
        if not call_sid:
            fields["outcome"] = "no_call_sid"
            return _xml(_apology(catalog, lang))

        def deadline_passed() -> str:
            log.error("webhook deadline passed", extra={"fields": {
                "call_sid": call_sid, "route": route, "deadline_ms": config.webhook_deadline_ms}})
            return _apology(catalog, lang)

        # Under `ivr serve` the watchdog answers a stuck webhook at its deadline, so the work
        # runs in this thread: see ivr/web/deadline.py.
        rescue = socket_answer(request.environ, "200 OK", _XML_TYPE, deadline_passed)

        def work(abandoned: threading.Event) -> tuple[str, str, str, str]:
            return _flow_transaction(route, action, form, create, call_sid, catalog, abandoned,
                                     ahead, answer_first=rescue is not None)

        body, fields["outcome"], fields["state"], lang = get_deadlines(current_app).run(
            work, started=started, label={"route": route, "call_sid": call_sid}, rescue=rescue)
        return _xml(body)
    except DeadlinePassed as passed:
        fields["outcome"] = "deadline"
        # Answered already (the watchdog sent the apology at the deadline): not heard.
        return _xml("" if passed.answered else deadline_passed())
    except Exception:
        fields["outcome"] = "error"
        log.exception("webhook failed", extra={"fields": {"call_sid": call_sid, "route": route}})
        return _xml(_apology(catalog, lang))
    finally:
        from_number = normalize_e164(form.get("From", ""))
        fields["from"] = mask_phone(from_number) if from_number else ""
        fields["ms"] = round((time.monotonic() - started) * 1000, 1)
        log.info("webhook", extra={"fields": fields})
        observe_webhook(route, str(fields["outcome"]), time.monotonic() - started)


def _flow_transaction(route: str, action: Callable[[CallContext], Step], form: dict[str, str],
                      create: bool, call_sid: str, catalog: Catalog,
                      abandoned: threading.Event, ahead: Ahead, *,
                      answer_first: bool = False) -> tuple[str, str, str, str]:
    """The webhook's database work: (TwiML, outcome, state, language), in one transaction.

    ``answer_first`` (the work runs in the request's own thread): a transaction that wrote
    nothing but the call's progress has its COMMIT's answer read after the caller's answer
    has been sent (``_finish_after_answer``)."""
    config = get_config(current_app)
    with get_database(current_app).webhook() as db:
        now = _now()
        call = load_call(db, call_sid, ahead(call_sid, catalog.settings, now))
        asked_before = call.state if call is not None else None
        if call is None and not create:
            return str(VoiceResponse()), "unknown_call", "", catalog.settings.default_language
        if call is None:
            call = new_call(db, call_sid, form, language=catalog.settings.default_language,
                            prompts_version=catalog.version, now=now)
            ctx = CallContext(handle=db, call=call, catalog=catalog, config=config, now=now,
                              accounting=_accounting())
            step = machine.start(ctx) if route == "incoming" else action(ctx)
        else:
            ctx = CallContext(handle=db, call=call, catalog=catalog, config=config, now=now,
                              accounting=_accounting())
            step = action(ctx)
        builder = TwimlBuilder(catalog, ctx.lang, config.base_url, config.pay_connector)
        body = twiml_text(builder.build(step))
        if abandoned.is_set():
            # The caller already heard the apology, which hung up: say so, rather than
            # leave the call waiting at a menu nobody hears. What the work recorded (a
            # payment <Pay> took, say) is true all the same, so it is still committed.
            machine.record(ctx, Event.DEADLINE, route)
            call.state = ENDED
            call.outcome = call.outcome or CallOutcome.DEADLINE
        state, lang = call.state, ctx.lang
        # Only a question that moves the call to another state (its answer comes back for
        # that state, which a lost write leaves the row short of), or an answer nobody
        # hears: see _finish_after_answer. Never <Pay> or a transfer, whose callbacks trust
        # the row as written.
        unheard = isinstance(step, Silent)
        moved_on = isinstance(step, Ask) and step.state != asked_before
        save_call(db, call, commit=True,
                  answer_first=answer_first and (moved_on or unheard)
                  and not abandoned.is_set())
        if db.commit_unread:
            _finish_after_answer(db, call_sid, route, config.webhook_deadline_ms / 1000)
        return body, "ok", state, lang


def _finish_after_answer(db: WebhookTransaction, call_sid: str, route: str,
                         seconds: float) -> None:
    """Read the COMMIT's answer once this request's answer is on its way to Twilio.

    A transaction of call progress alone has had its write and COMMIT sent; the row lock
    holds until that COMMIT has run, so the call's next webhook finds the row as written.
    Waiting for the answer before answering cost a webhook two wake-ups (docs/performance-log.md).
    Only for an answer that asks the question of another state than the call was in, or
    one nobody hears (a status callback's, a call's end). Should the write have failed
    after all (the connection dropped), the caller has heard that question over a row that
    still holds the state before it: their answer, posted for the new state, meets the
    stale-request rule (ivr.calls.machine.advance), and they hear the question before
    again, where waiting would have had them hear the apology and the call end. Their keys
    are never taken for a question they did not hear. An answer nobody hears loses what it
    lost before: the write (a call's end left open). Logged as an error."""
    def finish() -> None:
        try:
            db.finish_commit(seconds)
        except Exception:
            log.error("call progress not saved after the caller was answered", exc_info=True,
                      extra={"fields": {"call_sid": call_sid, "route": route}})

    def after(response: Response) -> Response:
        response.call_on_close(finish)  # gunicorn closes it once the answer is sent
        return response

    after_this_request(after)


def _apology(catalog: Catalog, lang: str) -> str:
    """Apologise and end the call politely when something failed on our side."""
    try:
        builder = TwimlBuilder(catalog, lang, "", "")
        return twiml_text(builder.build(Hangup((Speech("common.apology"),))))
    except Exception:
        return _last_resort()


def _last_resort() -> str:
    response = VoiceResponse()
    response.say(_LAST_RESORT)
    response.hangup()
    return str(response)


@bp.post("/incoming")
@twilio_signed
def incoming() -> Response:
    """The number's Voice URL: a new call (or Twilio retrying the first request)."""
    form = webhook_form()
    phone = normalize_e164(form.get("From", ""))

    def caller_id(_call_sid: str, _settings: LineSettings, _now: datetime) -> Sequence[ReadAhead]:
        # A new call's first question is who is calling.
        return (phone_ahead(phone),) if phone else ()

    return run_flow("incoming", machine.resume, form, ahead=caller_id)


@bp.post("/step/<state>")
@twilio_signed
def step(state: str) -> Response:
    """Keys gathered in ``state`` (Digits empty or absent means silence)."""
    form = webhook_form()
    digits = form.get("Digits")
    return run_flow(f"step:{state[:40]}", lambda ctx: machine.advance(ctx, state, digits), form,
                    ahead=partial(machine.reads_ahead, state))


@bp.post("/pay/result")
@twilio_signed
def pay_result() -> Response:
    """<Pay>'s action callback: the authoritative result of a payment attempt."""
    from ivr.money.payments import handle_pay_result

    form = webhook_form()
    return run_flow("pay_result", lambda ctx: handle_pay_result(ctx, form), form)


@bp.post("/pay/fallback")
@twilio_signed
def pay_fallback() -> Response:
    """Reached only if <Pay> ends without calling its action: a failed attempt."""
    from ivr.money.payments import handle_pay_result

    return run_flow("pay_fallback", lambda ctx: handle_pay_result(
        ctx, {"Result": "too-many-failed-attempts"}), webhook_form())


@bp.post("/pay/status")
@twilio_signed
def pay_status() -> Response:
    """<Pay> progress callbacks: informational only; never carries usable card data."""
    form = webhook_form()
    fields: dict[str, object] = {
        "call_sid": form.get("CallSid", "")[:64],
        # <Pay> names the field being captured "For"; the Payments API calls it "Capture".
        "capture": (form.get("For") or form.get("Capture") or "")[:40],
        "error_type": form.get("ErrorType", "")[:40]}
    if get_config(current_app).allow_unsigned:
        fields["unsigned"] = True
    log.info("pay progress", extra={"fields": fields})
    return Response("", status=204)


@bp.post("/dial/done")
@twilio_signed
def dial_done() -> Response:
    """The representative leg ended: goodbye if it connected, else back to where we were."""
    form = webhook_form()
    status = form.get("DialCallStatus", "").strip()

    def after(ctx: CallContext) -> Step:
        if status == "completed":
            machine.record(ctx, Event.TRANSFER_DONE)
            ctx.call.state = ENDED
            return Hangup((Speech("goodbye.thanks"),))
        machine.record(ctx, Event.TRANSFER_FAILED, status[:40])
        ctx.call.outcome = None
        return machine.resume_after_transfer(ctx)

    return run_flow("dial_done", after, form, create=False)


@bp.post("/status")
@twilio_signed
def call_status() -> Response:
    """The call status callback: closes the session with its final state."""
    form = webhook_form()
    status = form.get("CallStatus", "").strip()[:20]

    def close(ctx: CallContext) -> Step:
        call = ctx.call
        call.call_status = status
        if status in FINAL_CALL_STATUSES and call.ended_at is None:
            call.ended_at = ctx.now
            if call.outcome is None:
                call.outcome = (CallOutcome.HUNG_UP if call.state != ENDED
                                else CallOutcome.COMPLETED)
            machine.record(ctx, Event.CALL_END, f"{status}:{call.outcome}")
            _abandon_agent_payment(ctx)
        return Silent()

    def agent_session(call_sid: str, _settings: LineSettings,
                      _now: datetime) -> Sequence[ReadAhead]:
        from ivr.agentpay.session import session_ahead

        return (session_ahead(call_sid),)  # asked once the call has ended

    return run_flow("status", close, form, create=False, ahead=agent_session)


def _abandon_agent_payment(ctx: CallContext) -> None:
    """The caller hung up: an agent's payment in progress on the call records nothing."""
    from ivr.agentpay import session as agentpay
    from ivr.agentpay.audit import TWILIO
    from ivr.statuses import AgentPaymentStatus

    session = agentpay.active_session(ctx.handle, ctx.call.call_sid)
    if session is not None:
        agentpay.end(ctx, session, TWILIO, AgentPaymentStatus.ABANDONED, "the caller hung up")


@bp.post("/agent-pay/status")
@twilio_signed
def agent_pay_status() -> Response:
    """Status callbacks of an agent's Payments session (``?session=`` names it): a field's
    progress, or the final result, which records the payment once."""
    from ivr.agentpay import session as agentpay
    from ivr.agentpay.calls import load_call
    from ivr.models import AgentPayment

    form = webhook_form()
    session_id = request.args.get("session", "")
    catalog = _store().get()  # before the transaction (it may read on its own connection)
    with get_database(current_app).session() as db:
        session = db.get(AgentPayment, int(session_id)) if session_id.isdigit() and \
            len(session_id) < 10 else None
        call_sid = form.get("CallSid", "")[:64]
        if session is None or session.call_sid != call_sid or (
                session.payment_sid and form.get("Sid") not in (None, session.payment_sid)):
            log.warning("agent payment callback for no known session", extra={"fields": {
                "call_sid": call_sid, "session": session_id[:12]}})
            return Response("", status=204)
        call = load_call(db, call_sid)
        if call is None:
            return Response("", status=204)
        db.refresh(session)  # read again under the call's lock (a repeated callback waits)
        ctx = CallContext(handle=db, call=call, catalog=catalog,
                          config=get_config(current_app), now=_now(), accounting=_accounting())
        agentpay.handle_callback(ctx, session, form)
        log.info("agent pay progress", extra={"fields": {
            "call_sid": call_sid, "session": session.id, "status": str(session.status),
            "capture": (form.get("Capture") or "")[:40],
            "error_type": (form.get("ErrorType") or "")[:40],
            "result": (form.get("Result") or "")[:40]}})
    return Response("", status=204)


@bp.get("/audio/<path:name>")
def audio(name: str) -> Response:
    """Recorded prompt audio that ops placed under prompts/audio/."""
    directory = get_config(current_app).prompts_dir / "audio"
    return send_from_directory(directory, name, max_age=300)
