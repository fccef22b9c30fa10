"""Prompt pages: list, edit with the catalog checks, history, revert, preview audio."""

from __future__ import annotations

import re
import shutil
import time
import tomllib
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.calls.states import STATES
from ivr.models import PromptVersion
from ivr.ops import prompt_edit
from ivr.ops.prompt_edit import Change, EditRefused
from ivr.ops.prompt_usage import ANY_STATE, PROMPT_USAGE, STATE_QUESTIONS, usage_for
from ivr.prompts.catalog import load_catalog
from ivr.prompts.ids import PROMPT_PARAMS, REQUIRED_PROMPT_IDS
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, REPO, call, need_espeak, unavailable
from tests.test_ops_helpers import (
    USER,
    assert_accessible,
    assert_no_secrets,
    ops_app,
    signed_in,
    token,
)

pytestmark = pytest.mark.slow

WELCOME = "Thanks for calling."


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Flask:
    return ops_app(database_url, tmp_path)


@pytest.fixture
def lite(sqlite_url: str, tmp_path: Path) -> Flask:
    return ops_app(sqlite_url, tmp_path)


def _prompts(app: Flask) -> Path:
    return Path(app.extensions["ivr.config"].prompts_dir)


def _texts(app: Flask, prompt_id: str) -> dict[tuple[str, str], str | None]:
    return prompt_edit.current_texts(_prompts(app), prompt_id)


def _save(client: FlaskClient, prompt_id: str, edits: dict[tuple[str, str], str],
          note: str = "", origins: dict[tuple[str, str], str | None] | None = None) -> object:
    """Submit the editor as a browser would, with only the listed fields changed."""
    page = client.get(f"/ops/prompts/{prompt_id}")
    assert page.status_code == 200
    data = {"csrf_token": token(client, f"/ops/prompts/{prompt_id}"), "note": note}
    for (lang, variant), text in edits.items():
        had = re.search(rf'name="had:{lang}:{variant}" value="(\d)"', page.text)
        orig = re.search(rf'name="orig:{lang}:{variant}" value="([^"]*)"', page.text)
        assert had and orig
        data[f"text:{lang}:{variant}"] = text.replace("\n", "\r\n")  # as browsers send it
        data[f"had:{lang}:{variant}"] = had.group(1)
        data[f"orig:{lang}:{variant}"] = _unescape(orig.group(1))
        if origins and (lang, variant) in origins:
            value = origins[(lang, variant)]
            data[f"had:{lang}:{variant}"] = "0" if value is None else "1"
            data[f"orig:{lang}:{variant}"] = value or ""
    return client.post(f"/ops/prompts/{prompt_id}", data=data)


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def _wait_for_reload() -> None:
    time.sleep(0.25)  # the line's PromptStore looks at the files at most every 0.2 s


def test_prompt_list_shows_text_variants_and_states(lite: Flask) -> None:
    client = signed_in(lite)
    page = client.get("/ops/prompts")
    assert page.status_code == 200
    assert WELCOME in page.text
    assert 'href="/ops/prompts/menu.main"' in page.text
    row = page.text[page.text.index('href="/ops/prompts/identify.found"'):]
    row = row[:row.index("</tr>")]
    assert "confirm_account" in row and "reprompt" in row
    assert len(re.findall(r'href="/ops/prompts/[a-z_.-]+"', page.text)) == len(
        load_catalog(_prompts(lite)).ids())
    spanish = client.get("/ops/prompts?lang=es-US")
    assert "Gracias por llamar." in spanish.text
    found = client.get("/ops/prompts?q=disconnect")
    assert "summary.disconnect_pending" in found.text and "menu.main\"" not in found.text
    assert_accessible(page.text)
    assert_no_secrets(page.text)


def _happy_path_seconds(page: str) -> float:
    found = re.search(r"<strong>(\d+) s of speech</strong>", page)
    assert found, page[:2000]
    return float(found.group(1))


def _spoken(page: str, prompt_id: str) -> float:
    row = page[page.index(f'href="/ops/prompts/{prompt_id}"'):]
    found = re.search(r'<td class="spoken">([\d.]+) s</td>', row[:row.index("</tr>")])
    assert found, row[:row.index("</tr>")]
    return float(found.group(1))


def test_prompt_list_shows_what_wording_costs_in_seconds(lite: Flask) -> None:
    need_espeak()
    client = signed_in(lite)
    page = client.get("/ops/prompts").text
    assert 0.5 < _spoken(page, "greeting.welcome") < _spoken(page, "ach.authorize")
    before = _happy_path_seconds(page)
    assert 30 < before <= 60  # the shipped wording keeps the happy path within a minute
    # A longer account confirmation costs the happy path its seconds, shown at once.
    _save(client, "identify.found", {("en-US", "say"): (
        "We found the account ending in {last4}. If that is the account you are calling "
        "about today, press 1. To enter a different account number instead, press 2.")})
    _wait_for_reload()
    page = client.get("/ops/prompts").text
    assert _happy_path_seconds(page) >= before + 3
    assert "Spoken lengths are espeak-ng at 165 words a minute" in page
    assert_accessible(page)


def test_edit_is_heard_on_the_next_call_and_recorded(app: Flask) -> None:
    client = signed_in(app)
    assert WELCOME in call(app, "-").said()
    en = _prompts(app) / "en-US.toml"
    before = en.read_text(encoding="utf-8")
    response = _save(client, "greeting.welcome",
                     {("en-US", "say"): "Welcome to City Water payments."},
                     note="shorter greeting")
    assert response.status_code == 302, response.text
    page = client.get(response.headers["Location"])
    assert "Saved en-US say" in page.text
    after = en.read_text(encoding="utf-8")
    # One line changed; comments and layout kept.
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True)
               if a != b]
    assert changed == [(f'say = "{WELCOME}"', 'say = "Welcome to City Water payments."')]
    with get_database(app).session() as db:
        version = db.scalars(select(PromptVersion)).one()
    assert (version.prompt_id, version.language, version.variant) == ("greeting.welcome",
                                                                      "en-US", "say")
    assert (version.old_text, version.new_text) == (WELCOME, "Welcome to City Water payments.")
    assert (version.username, version.at, version.note) == (USER, OPEN_TIME, "shorter greeting")
    assert "shorter greeting" in page.text  # in the history table
    _wait_for_reload()
    said = call(app, "-").said()
    assert "Welcome to City Water payments." in said and WELCOME not in said


def test_multi_line_text_keeps_its_lines(lite: Flask) -> None:
    client = signed_in(lite)
    response = _save(client, "goodbye.thanks", {("en-US", "say"): "Thank you.\nGoodbye."})
    assert response.status_code == 302
    data = tomllib.loads((_prompts(lite) / "en-US.toml").read_text(encoding="utf-8"))
    assert data["goodbye"]["thanks"]["say"] == "Thank you.\nGoodbye."
    # The editor shows it back unchanged, so saving again without edits changes nothing.
    again = _save(client, "goodbye.thanks", {("en-US", "say"): "Thank you.\nGoodbye."})
    assert again.status_code == 400 and "nothing changed" in again.text


@pytest.mark.parametrize(("prompt_id", "edits", "problem"), [
    ("identify.found", {("en-US", "say"): "Account ending {last4}, {account_number}."},
     "uses {account_number}, which the line does not supply (it supplies {last4})"),
    ("identify.found", {("en-US", "say"): "We found your account. Press 1 or 2."},
     "placeholders differ between languages"),
    ("greeting.welcome", {("en-US", "say"): "Welcome <emphasis>unclosed."}, "malformed SSML"),
    ("greeting.welcome", {("en-US", "say"): "Welcome <blink>now</blink>."},
     "unknown SSML tag <blink>"),
    ("greeting.welcome", {("en-US", "say"): 'Welcome.<break time="100000s"/>'},
     "break time '100000s' is too long: at most 10s (10000ms)"),
    ("greeting.welcome", {("en-US", "say"): "  "}, "text is empty"),
    ("greeting.welcome", {("en-US", "say"): "Pay {"}, "bad placeholder syntax"),
    ("menu.main_no_pay", {("en-US", "reprompt"): "Recent payments, 2."},
     "reprompt is in en-US but not in es-US"),
    # Wording must name only keys the menu accepts (declared in ivr/calls/states/).
    ("menu.main", {("es-US", "say"): "Para pagar, oprima 1. Para la fecha, oprima 8."},
     "es-US.toml: prompt 'menu.main' (say) names key 8, which the main_menu menu does not "
     "accept"),
])
def test_refused_edit_shows_problems_and_changes_nothing(
        lite: Flask, prompt_id: str, edits: dict[tuple[str, str], str], problem: str) -> None:
    client = signed_in(lite)
    files = {p: p.read_bytes() for p in _prompts(lite).glob("*.toml")}
    response = _save(client, prompt_id, edits)
    assert response.status_code == 400
    assert "Not saved" in response.text and 'role="alert"' in response.text
    assert problem in _unescape(response.text)
    # The draft is still in the form, to be fixed rather than typed again.
    text = next(iter(edits.values())).strip()
    if text:
        assert _unescape(text) in _unescape(response.text)
    assert {p: p.read_bytes() for p in _prompts(lite).glob("*.toml")} == files
    with get_database(lite).session() as db:
        assert db.scalars(select(PromptVersion)).all() == []
    assert_accessible(response.text)


def test_new_variant_in_every_language_at_once(lite: Flask) -> None:
    client = signed_in(lite)
    response = _save(client, "menu.main_no_pay", {
        ("en-US", "reprompt"): "Recent payments, 2. Summary, 3.",
        ("es-US", "reprompt"): "Pagos recientes, 2. Resumen, 3."})
    assert response.status_code == 302, response.text
    texts = _texts(lite, "menu.main_no_pay")
    assert texts[("es-US", "reprompt")] == "Pagos recientes, 2. Resumen, 3."
    with get_database(lite).session() as db:
        versions = db.scalars(select(PromptVersion).order_by(PromptVersion.language)).all()
    assert [(v.language, v.old_text) for v in versions] == [("en-US", None), ("es-US", None)]
    # Revert of the English addition removes it again... which the cross-language check
    # refuses while Spanish still has one: both must go.
    refused = client.post(f"/ops/prompts/menu.main_no_pay/revert/{versions[0].id}", data={
        "csrf_token": token(client, "/ops/"), "had": "1",
        "expected": "Recent payments, 2. Summary, 3."})
    assert refused.status_code == 400
    assert "reprompt is in es-US but not in en-US" in refused.text
    removed = _save(client, "menu.main_no_pay", {("en-US", "reprompt"): "",
                                                 ("es-US", "reprompt"): ""})
    assert removed.status_code == 302, removed.text
    assert _texts(lite, "menu.main_no_pay")[("en-US", "reprompt")] is None


def test_someone_else_changed_the_file(lite: Flask) -> None:
    client = signed_in(lite)
    en = _prompts(lite) / "en-US.toml"
    # Another operator edits the file by hand after this editor was opened.
    en.write_text(en.read_text(encoding="utf-8").replace(WELCOME, "Hello from the shell."),
                  encoding="utf-8")
    response = _save(client, "greeting.welcome", {("en-US", "say"): "Hello from the console."},
                     origins={("en-US", "say"): WELCOME})
    assert response.status_code == 409
    assert "changed by someone else" in response.text
    assert "Hello from the console." in response.text  # the draft is kept
    assert _texts(lite, "greeting.welcome")[("en-US", "say")] == "Hello from the shell."


def test_revert_puts_the_old_text_back_as_a_new_change(app: Flask) -> None:
    client = signed_in(app)
    assert _save(client, "greeting.welcome",
                 {("en-US", "say"): "Welcome to City Water."}).status_code == 302
    assert _save(client, "greeting.welcome",
                 {("en-US", "say"): "Welcome to City Water, again."}).status_code == 302
    with get_database(app).session() as db:
        first, second = db.scalars(select(PromptVersion).order_by(PromptVersion.id)).all()
    page = client.get("/ops/prompts/greeting.welcome")
    assert f'action="/ops/prompts/greeting.welcome/revert/{first.id}"' in page.text
    form = page.text[page.text.index(f"/revert/{first.id}"):]
    expected = re.search(r'name="expected" value="([^"]*)"', form)
    assert expected and expected.group(1) == "Welcome to City Water, again."
    response = client.post(f"/ops/prompts/greeting.welcome/revert/{first.id}", data={
        "csrf_token": token(client, "/ops/"), "had": "1", "expected": expected.group(1)})
    assert response.status_code == 302
    assert _texts(app, "greeting.welcome")[("en-US", "say")] == WELCOME
    with get_database(app).session() as db:
        versions = db.scalars(select(PromptVersion).order_by(PromptVersion.id)).all()
    assert len(versions) == 3
    assert (versions[2].old_text, versions[2].new_text) == ("Welcome to City Water, again.",
                                                            WELCOME)
    assert versions[2].note == f"revert of change #{first.id}"
    # A stale revert form (the text moved on since) is refused.
    stale = client.post(f"/ops/prompts/greeting.welcome/revert/{second.id}", data={
        "csrf_token": token(client, "/ops/"), "had": "1",
        "expected": "Welcome to City Water, again."})
    assert stale.status_code == 409
    assert _texts(app, "greeting.welcome")[("en-US", "say")] == WELCOME
    assert client.post("/ops/prompts/menu.main/revert/999", data={
        "csrf_token": token(client, "/ops/")}).status_code == 404
    history = client.get("/ops/prompt-history")
    assert history.text.count("greeting.welcome</a>") == 3
    assert_accessible(history.text)


def test_unknown_prompt_is_not_found(lite: Flask) -> None:
    client = signed_in(lite)
    assert client.get("/ops/prompts/no.such.prompt").status_code == 404
    assert client.post("/ops/prompts/no.such.prompt", data={
        "csrf_token": token(client, "/ops/")}).status_code == 404


def test_broken_files_on_disk_are_reported(lite: Flask) -> None:
    client = signed_in(lite)
    en = _prompts(lite) / "en-US.toml"
    en.write_text(en.read_text(encoding="utf-8") + "\n[broken\n", encoding="utf-8")
    page = client.get("/ops/prompts")
    assert page.status_code == 200
    assert "invalid TOML" in page.text and "last good version" in page.text


def test_editor_page_lists_usage_placeholders_and_samples(lite: Flask) -> None:
    client = signed_in(lite)
    page = client.get("/ops/prompts/ach.authorize")
    assert page.status_code == 200
    for name in ("name", "amount", "date", "account_type", "last4", "phone"):
        assert f'name="sample:en-US:{name}"' in page.text
    assert "ach_authorize" in page.text and "script_version" in page.text
    assert_accessible(page.text)
    assert_no_secrets(page.text)


def _espeak_or_skip() -> None:
    if shutil.which("espeak-ng") is None:
        unavailable("espeak-ng is not installed (apt-get install espeak-ng)")


def test_preview_plays_synthesised_audio(lite: Flask) -> None:
    _espeak_or_skip()
    client = signed_in(lite)
    data = {"csrf_token": token(client, "/ops/prompts/amount.confirm"),
            "text:en-US:say": "You'd like to pay {amount}. <break time=\"300ms\"/> Press 1.",
            "had:en-US:say": "1", "orig:en-US:say": "", "preview": "en-US:say",
            "sample:en-US:amount": "forty dollars <and> no cents"}
    page = client.post("/ops/prompts/amount.confirm/preview", data=data)
    assert page.status_code == 200, page.text
    assert "You&#39;d like to pay forty dollars &lt;and&gt; no cents. Press 1." in page.text
    url = re.search(r'<audio controls preload="auto" src="([^"]+)"', page.text)
    assert url and re.fullmatch(r"/ops/audio/[0-9a-f]{64}\.wav", url.group(1))
    # The draft stays in the editor, unsaved.
    assert _texts(lite, "amount.confirm")[("en-US", "say")] != data["text:en-US:say"]
    with client.get(url.group(1)) as wav:
        assert wav.status_code == 200 and wav.mimetype == "audio/wav"
        body = wav.get_data()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and len(body) > 20_000
    # The same text again comes from the cache: same address.
    again = client.post("/ops/prompts/amount.confirm/preview", data=data)
    assert url.group(1) in again.text
    spanish = client.post("/ops/prompts/amount.confirm/preview", data={
        **data, "text:es-US:say": "Desea pagar {amount}.", "preview": "es-US:say",
        "sample:es-US:amount": "cuarenta dólares"})
    assert "Desea pagar cuarenta dólares." in spanish.text
    assert anonymous_cannot_fetch(lite, url.group(1))


def anonymous_cannot_fetch(app: Flask, url: str) -> bool:
    return app.test_client().get(url).status_code == 302


def test_preview_errors_are_shown(lite: Flask) -> None:
    client = signed_in(lite)
    base = {"csrf_token": token(client, "/ops/prompts/greeting.welcome"),
            "had:en-US:say": "1", "orig:en-US:say": WELCOME, "preview": "en-US:say"}
    for text, message in [("Hello <emphasis>there", "not valid SSML"),
                          ("Hello {", "bad placeholder syntax"),
                          ("   ", "no text to preview")]:
        page = client.post("/ops/prompts/greeting.welcome/preview",
                           data={**base, "text:en-US:say": text})
        assert page.status_code == 400, text
        assert message in page.text and 'role="alert"' in page.text
    bad = client.post("/ops/prompts/greeting.welcome/preview",
                      data={**base, "preview": "xx-XX:say"})
    assert bad.status_code == 400
    for key in ("0" * 64, "../../secret", "a" * 63):
        assert client.get(f"/ops/audio/{key}.wav").status_code == 404


def test_save_edit_unit(tmp_path: Path, sqlite_url: str) -> None:
    """The edit function on its own: lock, conflict check, candidate check, atomic write."""
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    (prompts / "audio").mkdir()
    (prompts / "audio" / "hello.wav").write_bytes(b"RIFF")
    en = prompts / "en-US.toml"
    en.write_text(en.read_text(encoding="utf-8").replace(
        '[greeting.welcome]\nsay = "Thanks for calling."',
        '[greeting.welcome]\nsay = "Thanks for calling."\n'
        'audio = "hello.wav"'), encoding="utf-8")
    from ivr.db import Database

    database = Database(sqlite_url)
    database.upgrade()
    mode = en.stat().st_mode
    try:
        with database.session() as db:
            versions = prompt_edit.save_edit(
                db, prompts, "greeting.welcome",
                [Change("en-US", "say", WELCOME, "Hello.")], username="u", note=" n ",
                now=OPEN_TIME, lock_path=tmp_path / "lock")
            assert versions[0].note == "n"
        assert _read(prompts)["greeting"]["welcome"] == {"say": "Hello.", "audio": "hello.wav"}
        assert en.stat().st_mode == mode
        assert not list(prompts.glob(".*"))  # no temp files left behind
        with database.session() as db, pytest.raises(EditRefused) as refused:
            prompt_edit.save_edit(db, prompts, "greeting.welcome",
                                  [Change("en-US", "say", "Hello.", None)], username="u",
                                  note="", now=OPEN_TIME, lock_path=tmp_path / "lock")
        assert "`say` is required" in str(refused.value)
    finally:
        database.dispose()


def _read(prompts: Path) -> dict[str, object]:
    return tomllib.loads((prompts / "en-US.toml").read_text(encoding="utf-8"))


# --- the static map of where prompts are used -------------------------------------------------

def test_usage_map_covers_every_required_prompt() -> None:
    assert set(REQUIRED_PROMPT_IDS) - set(PROMPT_USAGE) == set()
    assert set(PROMPT_USAGE) - set(REQUIRED_PROMPT_IDS) == set()
    known = {*STATES, "paying", "ended", ANY_STATE}
    for prompt_id, usage in PROMPT_USAGE.items():
        assert usage.states, prompt_id
        assert set(usage.states) <= known, prompt_id
    assert set(STATE_QUESTIONS) == set(STATES)
    for ids in STATE_QUESTIONS.values():
        assert set(ids) <= set(PROMPT_USAGE)
    assert usage_for("units.kwh").states and not usage_for("made.up").states
    # The values each prompt is given come from the one list `ivr prompts check` uses.
    assert usage_for("ach.authorize").placeholders == frozenset(PROMPT_PARAMS["ach.authorize"])
