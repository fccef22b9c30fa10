"""Tests for the prompt catalog (ivr.prompts.catalog) and line settings (ivr.prompts.settings)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from xml.parsers import expat
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.prompts.catalog import (
    Catalog,
    CatalogError,
    PromptStore,
    Rendered,
    check_catalog,
    escape_text,
    load_catalog,
)
from ivr.prompts.settings import LineSettings, SettingsError, parse_line_settings

REPO_SETTINGS = Path(__file__).resolve().parent.parent / "prompts" / "settings.toml"
CHICAGO = ZoneInfo("America/Chicago")

EN = """\
[greeting]
say = 'Thank you for calling.<break time="300ms"/> For English, press 1.'
note = "First thing every caller hears."

[balance]
say = 'Your balance is {amount}.<break time="300ms"/>'
reprompt = "Balance: {amount}."

[menu.main]
say = "Press 1 to pay, or 2 to hear recent payments."
noinput = "Sorry, I didn't hear anything."
nomatch = "Sorry, that is not an option."

[menu.amount]
say = "Press 1 for the full amount of <emphasis level='moderate'>{amount}</emphasis>."

[goodbye]
say = "Goodbye."
audio = "goodbye.wav"
"""

ES = """\
[greeting]
say = 'Gracias por llamar.<break time="300ms"/> Para español, oprima 2.'

[balance]
say = 'Su saldo es {amount}.<break time="300ms"/>'
reprompt = "Saldo: {amount}."

[menu.main]
say = "Oprima 1 para pagar, o 2 para escuchar sus pagos recientes."
noinput = "Perdón, no escuché nada."
nomatch = "Perdón, esa opción no es válida."

[menu.amount]
say = "Oprima 1 para el monto total de <emphasis level='moderate'>{amount}</emphasis>."

[goodbye]
say = "Adiós."
audio = "goodbye.wav"
"""


def make_prompts(
    directory: Path,
    files: dict[str, str] | None = None,
    *,
    audio: tuple[str, ...] = ("goodbye.wav",),
) -> Path:
    """A prompts directory: the real settings.toml plus language files (default: EN, ES)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_SETTINGS, directory / "settings.toml")
    for name, text in (files if files is not None else {"en-US": EN, "es-US": ES}).items():
        (directory / (name if name.endswith(".toml") else f"{name}.toml")).write_text(
            text, encoding="utf-8"
        )
    if audio:
        (directory / "audio").mkdir(exist_ok=True)
        for name in audio:
            (directory / "audio" / name).write_bytes(b"RIFF fake wav")
    return directory


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    return make_prompts(tmp_path / "prompts")


@pytest.fixture
def catalog(prompts_dir: Path) -> Catalog:
    return load_catalog(prompts_dir)


def settings_data(**overrides: Any) -> dict[str, Any]:
    """The real settings.toml decoded, with top-level tables/keys replaced or merged."""
    with REPO_SETTINGS.open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def bump(path: Path, text: str) -> None:
    """Rewrite a file and move its mtime forward so the change is seen even on coarse clocks."""
    before = path.stat().st_mtime
    path.write_text(text, encoding="utf-8")
    os.utime(path, (before + 10, before + 10))


def one_problem(problems: list[str], *fragments: str) -> str:
    """The single problem containing every fragment (fails with the full list otherwise)."""
    matches = [p for p in problems if all(fragment in p for fragment in fragments)]
    assert len(matches) == 1, problems
    return matches[0]


# --- loading and rendering ---------------------------------------------------------------


def test_good_catalog_has_no_problems(prompts_dir: Path) -> None:
    assert check_catalog(prompts_dir) == []
    assert check_catalog(prompts_dir, required_ids=["greeting", "menu.main"]) == []


def test_catalog_basics(catalog: Catalog) -> None:
    assert catalog.languages == ("en-US", "es-US")
    assert len(catalog.version) == 12
    int(catalog.version, 16)
    assert catalog.ids() == ["balance", "goodbye", "greeting", "menu.amount", "menu.main"]
    assert catalog.settings.default_language == "en-US"
    assert catalog.placeholders("balance") == frozenset({"amount"})
    assert catalog.placeholders("greeting") == frozenset()
    assert catalog.raw("greeting", "en-US")["note"] == "First thing every caller hears."
    assert "note" not in catalog.raw("greeting", "es-US")


def test_version_changes_with_any_file(prompts_dir: Path) -> None:
    first = load_catalog(prompts_dir).version
    assert load_catalog(prompts_dir).version == first
    (prompts_dir / "audio" / "goodbye.wav").write_bytes(b"RIFF re-recorded")
    second = load_catalog(prompts_dir).version
    assert second != first
    (prompts_dir / "es-US.toml").write_text(ES.replace("Adiós", "Hasta luego"), encoding="utf-8")
    assert load_catalog(prompts_dir).version not in (first, second)


def test_render_escapes_values_and_keeps_ssml(catalog: Catalog) -> None:
    rendered = catalog.render("balance", "en-US", amount="a & b")
    assert rendered == Rendered(ssml='Your balance is a &amp; b.<break time="300ms"/>', audio=None)
    rendered = catalog.render("balance", "es-US", amount="<speak>x</speak>")
    assert rendered.ssml == 'Su saldo es &lt;speak&gt;x&lt;/speak&gt;.<break time="300ms"/>'
    amount = catalog.render("menu.amount", "en-US", amount="$1 > $0")
    assert amount.ssml == (
        "Press 1 for the full amount of <emphasis level='moderate'>$1 &gt; $0</emphasis>."
    )


def test_render_literal_braces_and_non_string_values(tmp_path: Path) -> None:
    text = '[code]\nsay = "Code {{{code}}} for {count} items."\n'
    directory = make_prompts(tmp_path / "p", {"en-US": text, "es-US": text})
    catalog = load_catalog(directory)
    assert catalog.render("code", "en-US", code="A1", count=3).ssml == "Code {A1} for 3 items."


def test_render_variants(catalog: Catalog) -> None:
    assert catalog.render("balance", "en-US", "reprompt", amount="5").ssml == "Balance: 5."
    # No reprompt of its own: falls back to "say".
    assert catalog.render("menu.main", "en-US", "reprompt").ssml.startswith("Press 1 to pay")
    assert catalog.render("menu.main", "es-US", "nomatch").ssml == (
        "Perdón, esa opción no es válida."
    )
    with pytest.raises(KeyError, match="noinput"):
        catalog.render("balance", "en-US", "noinput", amount="5")
    with pytest.raises(ValueError, match="unknown variant"):
        catalog.render("balance", "en-US", "note", amount="5")


def test_render_errors_and_language_fallback(catalog: Catalog) -> None:
    with pytest.raises(KeyError, match=r"\{amount\}"):
        catalog.render("balance", "en-US")
    with pytest.raises(KeyError, match=r"no\.such"):
        catalog.render("no.such", "en-US")
    # Unknown language: the default language (en-US). Extra values are ignored.
    assert catalog.render("balance", "fr-CA", amount="1", extra="x").ssml.startswith("Your")
    assert catalog.render("greeting", "es-US").ssml.startswith("Gracias")


def test_audio_replaces_say_only(catalog: Catalog) -> None:
    say = catalog.render("goodbye", "en-US")
    assert say.audio == "goodbye.wav"  # relative to <prompts dir>/audio/
    assert say.ssml == "Goodbye."
    # reprompt falls back to say, so the recording is used there too.
    assert catalog.render("goodbye", "en-US", "reprompt").audio == say.audio
    assert catalog.render("greeting", "en-US").audio is None


def test_audio_in_subfolder(tmp_path: Path) -> None:
    text = '[hello]\nsay = "Hello."\naudio = "en/hello.wav"\n'
    directory = make_prompts(tmp_path / "p", {"en-US": text, "es-US": text}, audio=())
    (directory / "audio" / "en").mkdir(parents=True)
    (directory / "audio" / "en" / "hello.wav").write_bytes(b"RIFF")
    assert load_catalog(directory).render("hello", "en-US").audio == "en/hello.wav"


def test_audio_https_url(tmp_path: Path) -> None:
    text = '[hello]\nsay = "Hello."\naudio = "https://cdn.example.com/hello.mp3"\n'
    catalog = load_catalog(make_prompts(tmp_path / "p", {"en-US": text, "es-US": text}))
    assert catalog.render("hello", "es-US").audio == "https://cdn.example.com/hello.mp3"


def test_whole_ssml_subset_is_accepted(tmp_path: Path) -> None:
    say = (
        "<p><s>Call <say-as interpret-as='telephone' format='1'>{phone}</say-as>.</s>"
        "<s><lang xml:lang='es-US'>Hola</lang> <prosody rate='slow' pitch='low' volume='loud'>"
        "slowly</prosody> <sub alias='World Wide Web Consortium'>W3C</sub> "
        "<phoneme alphabet='x-sampa' ph='pIkA:n'>pecan</phoneme> <w role='amazon:VB'>read</w> "
        "<emphasis level='strong'>now</emphasis><break strength='weak'/>"
        "<break time='1.5s'/></s></p>"
    )
    text = f'[office]\nsay = "{say}"\n'
    directory = make_prompts(tmp_path / "p", {"en-US": text, "es-US": text})
    assert check_catalog(directory) == []
    rendered = load_catalog(directory).render("office", "en-US", phone="555-0100")
    assert "<say-as interpret-as='telephone' format='1'>555-0100</say-as>" in rendered.ssml


def test_has(catalog: Catalog) -> None:
    assert catalog.has("menu.main", "en-US")
    assert catalog.has("menu.main", "es-US", "noinput")
    assert not catalog.has("balance", "en-US", "noinput")
    assert not catalog.has("menu.main", "en-US", "reprompt")  # defined? no (render falls back)
    assert not catalog.has("no.such", "en-US")
    assert catalog.has("greeting", "xx-XX")  # default language


def test_raw_is_read_only(catalog: Catalog) -> None:
    raw = catalog.raw("balance", "en-US")
    assert dict(raw) == {
        "say": 'Your balance is {amount}.<break time="300ms"/>',
        "reprompt": "Balance: {amount}.",
    }
    with pytest.raises(TypeError):
        raw["say"] = "x"  # type: ignore[index]


def test_single_language_and_extra_language_file(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": ES, "fr-CA": EN})
    (directory / ".#en-US.toml").write_text("editor lock file", encoding="utf-8")
    catalog = load_catalog(directory)
    # Offered languages in menu order first; a file not in settings.languages still loads.
    assert catalog.languages == ("en-US", "es-US", "fr-CA")


# --- check_catalog: every problem kind -----------------------------------------------------


def test_load_catalog_raises_with_all_problems(tmp_path: Path) -> None:
    bad = EN.replace("[goodbye]", "[goodbye]\nvoice = 'x'").replace("{amount}.<", "{amount}.<<")
    directory = make_prompts(tmp_path / "p", {"en-US": bad, "es-US": ES})
    with pytest.raises(CatalogError) as info:
        load_catalog(directory)
    assert len(info.value.problems) >= 2
    assert info.value.problems == check_catalog(directory)
    assert "unknown key 'voice'" in str(info.value)


def test_problem_settings(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p")
    text = REPO_SETTINGS.read_text(encoding="utf-8").replace("max_attempts = 2", "max_attempts = 5")
    (directory / "settings.toml").write_text(text, encoding="utf-8")
    problem = one_problem(check_catalog(directory), "pay.max_attempts")
    assert problem == "settings.toml: pay.max_attempts: must be between 1 and 3, got 5"


def test_problem_settings_missing(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p")
    (directory / "settings.toml").unlink()
    one_problem(check_catalog(directory), "settings.toml", "missing")


def test_problem_unreadable_toml(tmp_path: Path) -> None:
    broken = '[greeting]\nsay = "Hola."\nreprompt "Hola."\n'
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": broken})
    problem = one_problem(check_catalog(directory), "es-US.toml")
    assert problem.startswith("es-US.toml: invalid TOML")
    assert "line 3" in problem
    (directory / "es-US.toml").write_bytes(b'[greeting]\nsay = "\xff"\n')
    one_problem(check_catalog(directory), "es-US.toml", "not UTF-8")


def test_problem_language_without_file(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", {"en-US": EN})
    problem = one_problem(check_catalog(directory), "es-US")
    assert "language es-US is listed in `languages` but es-US.toml does not exist" in problem


def test_problem_no_language_files(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", {})
    one_problem(check_catalog(directory), "no language files")


def test_problem_bad_language_file_name(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": ES, "backup": EN})
    one_problem(check_catalog(directory), "backup.toml", "not a language tag")


def test_problem_missing_directory(tmp_path: Path) -> None:
    assert check_catalog(tmp_path / "nope") == [
        f"{tmp_path / 'nope'}: prompts directory does not exist"
    ]


def test_problem_id_missing_in_one_language(tmp_path: Path) -> None:
    es = ES.replace('[goodbye]\nsay = "Adiós."\naudio = "goodbye.wav"\n', "")
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": es})
    problem = one_problem(check_catalog(directory), "goodbye")
    assert problem == "es-US.toml: prompt 'goodbye' is missing (present in en-US)"


def test_problem_required_id_missing(prompts_dir: Path) -> None:
    problems = check_catalog(prompts_dir, required_ids=["greeting", "pay.success"])
    assert problems == ["required prompt 'pay.success' is missing from every language file"]
    with pytest.raises(CatalogError, match=r"pay\.success"):
        PromptStore(prompts_dir, required_ids=["pay.success"]).get()


def test_problem_variant_in_one_language_only(tmp_path: Path) -> None:
    es = ES.replace('noinput = "Perdón, no escuché nada."\n', "")
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": es})
    problem = one_problem(check_catalog(directory), "noinput")
    assert problem == "prompt 'menu.main': noinput is in en-US but not in es-US"


def test_problem_placeholders_differ(tmp_path: Path) -> None:
    es = ES.replace("Su saldo es {amount}", "Su saldo es {monto}")
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": es})
    problem = one_problem(check_catalog(directory), "placeholders differ")
    assert problem == (
        "prompt 'balance' (say): placeholders differ between languages: "
        "en-US has {amount}; es-US has {monto}"
    )


def test_problem_unknown_key_in_prompt(tmp_path: Path) -> None:
    en = EN.replace('say = "Goodbye."', 'say = "Goodbye."\nrepromt = "Bye."')
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    problem = one_problem(check_catalog(directory), "repromt")
    assert problem.startswith("en-US.toml: prompt 'goodbye': unknown key 'repromt'")
    assert "reprompt" in problem  # lists what is allowed


@pytest.mark.parametrize(
    ("say", "fragments"),
    [
        ("Hello <break time='1s'>", ("(say)", "malformed SSML", "mismatched tag")),
        ("Fish & chips", ("(say)", "malformed SSML", "line 1, column 7")),
        ("Hello &nbsp; there", ("(say)", "malformed SSML", "undefined entity")),
        ("Hello <audio src='x.mp3'/>", ("(say)", "unknown SSML tag <audio>")),
        ("Hello <break tme='1s'/>", ("(say)", "unknown attribute 'tme' on <break>")),
        ("Hello <break time='forever'/>", ("(say)", "bad value 'forever' for time")),
        ("Hello <sub>W3C</sub>", ("(say)", "<sub> needs attribute 'alias'")),
        ("Hello <!-- later -->", ("(say)", "XML comments are not allowed")),
        ("Wait <break time='{ms}'/>", ("(say)", "placeholders are not allowed in attributes")),
        ("You owe {amount:.2f}", ("(say)", "{amount} must not have a format spec")),
        ("You owe {0}", ("(say)", "{0} must be a plain name")),
        ("You owe {amount.cents}", ("(say)", "{amount.cents} must be a plain name")),
        ("Unbalanced { brace", ("(say)", "bad placeholder syntax")),
    ],
)
def test_problem_bad_text(tmp_path: Path, say: str, fragments: tuple[str, ...]) -> None:
    en = EN.replace('say = "Goodbye."', f'say = "{say}"')
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    problems = check_catalog(directory)
    problem = one_problem(problems, *fragments)
    # Names the file (language), the prompt id and the variant.
    assert problem.startswith("en-US.toml: prompt 'goodbye' (say): "), problem



@pytest.mark.parametrize("markup", [
    "<break time='10s'/>", "<break time='10000ms'/>", "<break time='9.5s'/>",
    "<break time='2s'/><break time='10s'/><break time='8s'/>",
    "<prosody rate='20%'>a</prosody>", "<prosody rate='200%'>a</prosody>",
    "<prosody rate='x-slow' pitch='-33%' volume='+6dB'>a</prosody>",
    "<prosody pitch='+50%' volume='-6dB'>a</prosody>",
    "<prosody pitch='x-high' volume='x-soft'>a</prosody>",
])
def test_ssml_within_limits_is_accepted(tmp_path: Path, markup: str) -> None:
    en = EN.replace('say = "Goodbye."', f'say = "Goodbye.{markup}"')
    assert check_catalog(make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})) == []


@pytest.mark.parametrize(("markup", "fragment"), [
    ("<break time='100000s'/>", "break time '100000s' is too long: at most 10s (10000ms)"),
    ("<break time='10001ms'/>", "break time '10001ms' is too long: at most 10s (10000ms)"),
    ("<break time='10.5s'/>", "break time '10.5s' is too long"),
    ("<break time='9s'/><break time='9s'/><break time='9s'/>",
     "pauses add up to 27s: at most 20s in one text"),
    ("<prosody rate='1%'>slow</prosody>", "prosody rate '1%' is out of range: 20% to 200%"),
    ("<prosody rate='5000%'>fast</prosody>", "prosody rate '5000%' is out of range"),
    ("<prosody rate='0.1'>slow</prosody>", "prosody rate '0.1' is out of range"),
    ("<prosody pitch='+900%'>hi</prosody>", "prosody pitch '+900%' is out of range"),
    ("<prosody volume='+60dB'>loud</prosody>", "prosody volume '+60dB' is out of range"),
    ("<prosody volume='silent'>quiet</prosody>", "prosody volume 'silent' is out of range"),
])
def test_ssml_beyond_limits_is_refused(tmp_path: Path, markup: str, fragment: str) -> None:
    en = EN.replace('say = "Goodbye."', f'say = "Goodbye.{markup}"')
    problems = check_catalog(make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES}))
    problem = one_problem(problems, fragment)
    assert problem.startswith("en-US.toml: prompt 'goodbye' (say): "), problem


def test_problem_ssml_in_other_variants_and_languages(tmp_path: Path) -> None:
    es = ES.replace('nomatch = "Perdón, esa opción no es válida."', 'nomatch = "<b>No</b>"')
    directory = make_prompts(tmp_path / "p", {"en-US": EN, "es-US": es})
    problem = one_problem(check_catalog(directory), "<b>")
    assert problem.startswith("es-US.toml: prompt 'menu.main' (nomatch): unknown SSML tag")


def test_problem_ssml_error_position_on_later_line(tmp_path: Path) -> None:
    en = EN.replace('say = "Goodbye."', "say = '''Good\nbye <p>'''")
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    one_problem(check_catalog(directory), "(say)", "malformed SSML", "line 2")


def test_problem_audio_file_missing(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", audio=())
    problems = check_catalog(directory)
    assert one_problem(problems, "en-US.toml", "audio") == (
        "en-US.toml: prompt 'goodbye': audio file audio/goodbye.wav does not exist"
    )
    one_problem(problems, "es-US.toml", "audio")


@pytest.mark.parametrize(
    ("audio", "fragment"),
    [
        ("http://cdn.example.com/bye.wav", "must use https"),
        ("../settings.toml", "must be a file name under audio/"),
        ("/etc/passwd", "must be a file name under audio/"),
    ],
)
def test_problem_audio_bad_reference(tmp_path: Path, audio: str, fragment: str) -> None:
    en = EN.replace('audio = "goodbye.wav"', f'audio = "{audio}"')
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    one_problem(check_catalog(directory), "en-US.toml", "'goodbye'", fragment)


def test_problem_audio_with_placeholders(tmp_path: Path) -> None:
    en = EN.replace(
        'reprompt = "Balance: {amount}."', 'reprompt = "Balance: {amount}."\naudio = "goodbye.wav"'
    )
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    one_problem(check_catalog(directory), "en-US.toml", "'balance'", "has `audio` but `say`")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('[extra]\nsay = "x"\nspeed = "fast"\n', "unknown key 'speed'"),
        ('[extra]\nreprompt = "x"\n', "`say` is required"),
        ("[extra]\nsay = 5\n", "say must be a string"),
        ('[extra]\nsay = "   "\n', "text is empty"),
        ('extra = "Hello"\n', "'extra' is a str, not a table"),
        ("[extra]\n", "[extra] is empty"),
        ('[extra.inner]\nsay = "x"\n[extra]\nsay = "y"\n', "unknown key 'inner'"),
    ],
)
def test_problem_bad_prompt_tables(tmp_path: Path, extra: str, fragment: str) -> None:
    directory = make_prompts(tmp_path / "p", {"en-US": extra + EN, "es-US": extra + ES})
    problems = check_catalog(directory)
    one_problem(problems, "en-US.toml", fragment)
    one_problem(problems, "es-US.toml", fragment)


def test_problem_with_bad_prompt_not_also_reported_missing(tmp_path: Path) -> None:
    en = EN.replace('say = "Goodbye."', 'say = "Good <bye"')
    directory = make_prompts(tmp_path / "p", {"en-US": en, "es-US": ES})
    problems = check_catalog(directory)
    assert len(problems) == 1, problems


# --- PromptStore ---------------------------------------------------------------------------


def test_store_loads_and_reloads_edits(prompts_dir: Path) -> None:
    store = PromptStore(prompts_dir, required_ids=["greeting"], min_interval=0)
    assert store.directory == prompts_dir
    first = store.get()
    assert store.get() is first  # unchanged files: same catalog object
    bump(prompts_dir / "en-US.toml", EN.replace("Goodbye.", "Bye now."))
    second = store.get()
    assert second is not first
    assert second.version != first.version
    assert second.render("goodbye", "en-US").ssml == "Bye now."


def test_store_sees_new_and_deleted_files(prompts_dir: Path) -> None:
    store = PromptStore(prompts_dir, min_interval=0)
    first = store.get()
    (prompts_dir / "audio" / "extra.wav").write_bytes(b"RIFF")
    assert store.get().version != first.version
    (prompts_dir / "audio" / "extra.wav").unlink()
    assert store.get().version == first.version


def test_store_keeps_old_catalog_when_edit_is_bad(
    prompts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PromptStore(prompts_dir, min_interval=0)
    good = store.get()
    caplog.set_level(logging.INFO, logger="ivr.prompts.catalog")
    bump(prompts_dir / "en-US.toml", EN.replace('say = "Goodbye."', 'say = "Goodbye.<break>"'))
    assert store.get() is good
    errors = [r for r in caplog.records
              if r.name == "ivr.prompts.catalog" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert good.version in errors[0].getMessage()
    assert "malformed SSML" in errors[0].getMessage()
    # The same broken file is not re-logged on every call.
    assert store.get() is good
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    # Fixing it applies the fix.
    bump(prompts_dir / "en-US.toml", EN.replace("Goodbye.", "Farewell."))
    assert store.get().render("goodbye", "en-US").ssml == "Farewell."


def test_store_first_load_failure_raises_then_recovers(tmp_path: Path) -> None:
    directory = make_prompts(tmp_path / "p", {"en-US": EN})
    store = PromptStore(directory)
    with pytest.raises(CatalogError, match="es-US"):
        store.get()
    (directory / "es-US.toml").write_text(ES, encoding="utf-8")
    assert store.get().languages == ("en-US", "es-US")


def test_store_checks_at_most_once_per_interval(prompts_dir: Path) -> None:
    store = PromptStore(prompts_dir, min_interval=3600)
    first = store.get()
    bump(prompts_dir / "en-US.toml", EN.replace("Goodbye.", "Bye now."))
    assert store.get() is first


def test_store_is_thread_safe(prompts_dir: Path) -> None:
    store = PromptStore(prompts_dir, min_interval=0)
    store.get()
    seen: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(30):
                seen.append(store.get().render("goodbye", "en-US").ssml)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for n in range(5):
        bump(prompts_dir / "en-US.toml", EN.replace("Goodbye.", f"Bye {n}."))
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(seen) <= {"Goodbye."} | {f"Bye {n}." for n in range(5)}
    assert store.get().render("goodbye", "en-US").ssml == "Bye 4."


# --- rendering is always well-formed XML (property) ----------------------------------------


@pytest.fixture(scope="module")
def property_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    text = "[p]\nsay = \"A {a} B <emphasis level='strong'>{b}</emphasis><break time='1s'/>\"\n"
    directory = make_prompts(tmp_path_factory.mktemp("prop"), {"en-US": text, "es-US": text})
    return load_catalog(directory)


def _character_data(xml: str) -> str:
    parser = expat.ParserCreate()
    chunks: list[str] = []
    parser.CharacterDataHandler = chunks.append
    parser.Parse(xml, True)  # raises ExpatError when not well-formed
    return "".join(chunks)


def _expected_text(value: str) -> str:
    # What an XML parser gives back: invalid characters dropped, line ends normalized.
    kept = "".join(
        ch
        for ch in value
        if ch in "\t\n\r"
        or "\x20" <= ch <= "\ud7ff"
        or "\ue000" <= ch <= "\ufffd"
        or ch >= "\U00010000"
    )
    return kept.replace("\r\n", "\n").replace("\r", "\n")


any_text = st.text(st.characters(exclude_categories=()))


@settings(max_examples=300, deadline=None)
@given(a=any_text, b=any_text)
def test_render_any_values_is_well_formed(property_catalog: Catalog, a: str, b: str) -> None:
    rendered = property_catalog.render("p", "en-US", a=a, b=b)
    text = _character_data(f"<speak>{rendered.ssml}</speak>")
    assert text == f"A {_expected_text(a)} B {_expected_text(b)}"


@settings(max_examples=300, deadline=None)
@given(value=any_text)
def test_escape_text_round_trips(value: str) -> None:
    assert _character_data(f"<s>{escape_text(value)}</s>") == _expected_text(value)


# --- line settings -----------------------------------------------------------------------


def test_parse_real_settings_file() -> None:
    with REPO_SETTINGS.open("rb") as fh:
        settings = parse_line_settings(tomllib.load(fh))
    assert isinstance(settings, LineSettings)
    assert settings.languages == ("en-US", "es-US")
    assert settings.default_language == "en-US"
    assert settings.voices["es-US"].voice == "Polly.Lupe-Neural"
    assert settings.voices["en-US"].language == "en-US"
    assert settings.input.timeout_seconds == 7
    assert settings.input.extended_timeout_seconds == 20
    assert settings.input.max_tries == 3
    assert settings.verification.method == "zip"
    assert settings.verification.max_failures_per_call == 3
    assert settings.verification.lockout_failures == 5
    assert settings.verification.lockout_window == timedelta(minutes=30)
    assert settings.verification.lockout_duration == timedelta(minutes=30)
    assert settings.amount.minimum_cents == 100
    assert settings.amount.maximum_cents == 500_000
    assert (settings.fee.card_cents, settings.fee.ach_cents) == (0, 0)
    transfer = settings.transfer
    assert transfer.enabled
    assert transfer.number == "+15555550100"
    assert transfer.timezone == CHICAGO
    assert transfer.holidays == frozenset({date(2026, 12, 25), date(2027, 1, 1)})
    assert transfer.hours[0] == (time(8), time(17))
    assert transfer.hours[4] == (time(8), time(17))
    assert transfer.hours[5] is None
    assert transfer.hours[6] is None
    pay = settings.pay
    assert pay.connector == "Default"
    assert (pay.max_attempts, pay.timeout_seconds, pay.max_tries_per_call) == (2, 10, 3)
    assert pay.security_code
    assert pay.postal_code
    assert pay.valid_card_types == ("visa", "mastercard", "amex", "discover")
    assert pay.currency == "usd"
    assert dict(pay.language) == {"en-US": "en-US", "es-US": "es-MX"}
    assert settings.ach.enabled
    assert settings.ach.script_version == "tel-2026-11-v1"
    assert settings.ach.office_phone == "+15555550100"


def test_minimal_settings_take_defaults() -> None:
    settings = parse_line_settings({})
    assert settings.languages == ("en-US", "es-US")
    assert settings.input.timeout_seconds == 7
    assert settings.amount.maximum_cents == 500_000
    assert settings.pay.max_attempts == 2
    assert settings.transfer.hours[0] == (time(8), time(17))
    # Site-specific values have no default, and what needs them is off.
    assert settings.transfer.number is None
    assert not settings.transfer.enabled
    assert settings.transfer.holidays == frozenset()
    assert settings.ach.office_phone == ""
    assert not settings.ach.enabled


def test_settings_are_immutable() -> None:
    settings = parse_line_settings({})
    with pytest.raises(AttributeError):
        settings.default_language = "es-US"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.voices["fr-CA"] = settings.voices["en-US"]  # type: ignore[index]


def test_single_language_settings() -> None:
    settings = parse_line_settings({"languages": ["es-US"], "default_language": "es-US"})
    assert settings.languages == ("es-US",)
    assert settings.voices["es-US"].voice == "Polly.Lupe-Neural"
    # Going English-only must not require deleting the Spanish voice and <Pay> language.
    english = parse_line_settings(settings_data(languages=["en-US"]))
    assert english.languages == ("en-US",)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        (
            {"pay": {"max_atempts": 2}},
            "pay.max_atempts: unknown key (did you mean 'max_attempts'?)",
        ),
        ({"transfer": {"hours": {"monday": "08:00-17:00"}}}, "transfer.hours.monday: unknown key"),
        ({"voices": {"en-US": {"voice": "x", "speed": 1}}}, 'voices."en-US".speed: unknown key'),
        ({"input": {"max_tries": "3"}}, "input.max_tries: must be an integer, got string '3'"),
        ({"input": {"max_tries": True}}, "input.max_tries: must be an integer, got boolean"),
        ({"input": 5}, "input: must be a table, got integer"),
        ({"pay": {"security_code": "yes"}}, "pay.security_code: must be true or false"),
        ({"languages": "en-US"}, "languages: must be a list of non-empty strings"),
        ({"pay": {"max_attempts": 0}}, "pay.max_attempts: must be between 1 and 3, got 0"),
        ({"pay": {"max_attempts": 4}}, "pay.max_attempts: must be between 1 and 3, got 4"),
        ({"pay": {"valid_card_types": ["visa", "bitcoin"]}}, "unknown card type 'bitcoin'"),
        ({"pay": {"currency": "USD"}}, "pay.currency: must be a lowercase ISO 4217 code"),
        (
            {"amount": {"minimum": "10.00", "maximum": "5.00"}},
            "amount.minimum: 10.00 is more than maximum 5.00",
        ),
        ({"amount": {"minimum": "0.00"}}, "amount.minimum: must be at least 0.01"),
        ({"amount": {"maximum": "5000"}}, 'amount.maximum: must be a quoted amount like "12.34"'),
        ({"amount": {"maximum": "5,000.00"}}, "amount.maximum: must be a quoted amount"),
        ({"fee": {"card": "1.5"}}, "fee.card: must be a quoted amount"),
        ({"fee": {"card": 1.5}}, 'fee.card: must be a quoted amount like "12.34", got float'),
        ({"transfer": {"timezone": "America/Chicgo"}}, "transfer.timezone: unknown time zone"),
        ({"transfer": {"timezone": "../etc/passwd"}}, "transfer.timezone: unknown time zone"),
        ({"transfer": {"hours": {"mon": "8-5"}}}, 'transfer.hours.mon: must be "HH:MM-HH:MM"'),
        ({"transfer": {"hours": {"tue": "08:00-25:00"}}}, "transfer.hours.tue: must be"),
        ({"transfer": {"hours": {"wed": "17:00-08:00"}}}, "closing time must be after opening"),
        ({"transfer": {"holidays": ["2026-13-01"]}}, "transfer.holidays: '2026-13-01' is not"),
        ({"transfer": {"number": "555-0100"}}, "transfer.number: must be an E.164 phone number"),
        ({"default_language": "fr-CA"}, "default_language: 'fr-CA' is not one of languages"),
        ({"languages": ["en-US", "fr-CA"]}, "voices: no voice for language 'fr-CA'"),
        ({"languages": ["en-US", "en-US"]}, "languages: lists en-US more than once"),
        ({"languages": []}, "languages: must list at least one language"),
        ({"voices": {"en-us": {"voice": "x"}}}, "voices.\"en-us\": did you mean 'en-US'?"),
        ({"pay": {"language": {"EN": "en-US"}}}, "pay.language.EN: is not a language tag"),
        ({"voices": {"en-US": {"language": "en-US"}}}, 'voices."en-US".voice: is required'),
        ({"verification": {"method": "sms"}}, 'verification.method: must be "zip", "pin" or'),
        ({"input": {"extended_timeout_seconds": 3}}, "must be at least timeout_seconds (7)"),
    ],
)
def test_settings_errors(overrides: dict[str, Any], expected: str) -> None:
    data = settings_data(**overrides)
    with pytest.raises(SettingsError) as info:
        parse_line_settings(data)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_settings_pay_language_required_for_each_language() -> None:
    data = settings_data(
        languages=["en-US", "es-MX"],
        voices={"es-MX": {"voice": "Polly.Mia-Neural"}},
    )
    with pytest.raises(SettingsError) as info:
        parse_line_settings(data)
    assert info.value.problems == [
        'pay.language: no <Pay> language for \'es-MX\' (add "es-MX" = "...")'
    ]
    data["pay"]["language"]["es-MX"] = "es-MX"
    settings = parse_line_settings(data)
    assert settings.voices["es-MX"].language == "es-MX"  # defaults to the line language


def test_settings_refuse_what_the_line_cannot_say() -> None:
    data = settings_data(languages=["en-US", "fr-CA"],
                         voices={"fr-CA": {"voice": "Polly.Gabrielle-Neural"}})
    data["pay"]["language"]["fr-CA"] = "fr-CA"
    data["pay"]["currency"] = "eur"
    with pytest.raises(SettingsError) as info:
        parse_line_settings(data)
    assert any("'fr-CA': amounts and dates can be spoken in en, es only" in p
               for p in info.value.problems)
    assert any("only usd is supported" in p for p in info.value.problems)


def test_settings_transfer_enabled_needs_number() -> None:
    data = settings_data()
    del data["transfer"]["number"]
    with pytest.raises(SettingsError, match=r"transfer\.number: is required"):
        parse_line_settings(data)


def test_settings_error_lists_every_problem() -> None:
    data = settings_data(
        colour="blue", pay={"max_attempts": 9}, amount={"minimum": 1}, transfer={"timezone": "X"}
    )
    with pytest.raises(SettingsError) as info:
        parse_line_settings(data)
    assert len(info.value.problems) == 4, info.value.problems
    assert "pay.max_attempts" in str(info.value)


def test_settings_native_toml_dates_for_holidays() -> None:
    data = tomllib.loads('[transfer]\nnumber = "+15555550100"\nholidays = [2026-07-03]\n')
    assert parse_line_settings(data).transfer.holidays == frozenset({date(2026, 7, 3)})


# --- business hours ----------------------------------------------------------------------


@pytest.fixture
def office() -> LineSettings:
    with REPO_SETTINGS.open("rb") as fh:
        return parse_line_settings(tomllib.load(fh))


def chicago(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


def test_is_open_weekday_hours(office: LineSettings) -> None:
    transfer = office.transfer
    assert transfer.is_open(chicago(2026, 3, 2, 8, 0))  # Monday
    assert transfer.is_open(chicago(2026, 3, 2, 16, 59))
    assert not transfer.is_open(chicago(2026, 3, 2, 7, 59))
    assert not transfer.is_open(chicago(2026, 3, 2, 17, 0))
    assert not transfer.is_open(chicago(2026, 3, 7, 10, 0))  # Saturday
    assert not transfer.is_open(chicago(2026, 3, 8, 10, 0))  # Sunday


def test_is_open_converts_to_local_zone_across_dst(office: LineSettings) -> None:
    transfer = office.transfer
    # 13:30 UTC is 07:30 CST before the change (closed) and 08:30 CDT after it (open).
    assert not transfer.is_open(datetime(2026, 3, 6, 13, 30, tzinfo=UTC))
    assert transfer.is_open(datetime(2026, 3, 9, 13, 30, tzinfo=UTC))
    # And back again in November: 13:30 UTC is 08:30 CDT on Oct 30, 07:30 CST on Nov 2.
    assert transfer.is_open(datetime(2026, 10, 30, 13, 30, tzinfo=UTC))
    assert not transfer.is_open(datetime(2026, 11, 2, 13, 30, tzinfo=UTC))


def test_next_opening_over_weekend_into_dst(office: LineSettings) -> None:
    # Friday after closing, CST; clocks spring forward on Sunday 2026-03-08.
    opening = office.transfer.next_opening(chicago(2026, 3, 6, 17, 30))
    assert opening == chicago(2026, 3, 9, 8, 0)
    assert opening is not None
    assert opening.utcoffset() == timedelta(hours=-5)  # CDT
    assert opening.astimezone(UTC) == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert opening.tzinfo == CHICAGO


def test_next_opening_over_weekend_out_of_dst(office: LineSettings) -> None:
    # Clocks fall back on Sunday 2026-11-01.
    opening = office.transfer.next_opening(datetime(2026, 10, 30, 23, 0, tzinfo=UTC))
    assert opening is not None
    assert opening.astimezone(UTC) == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    assert opening.utcoffset() == timedelta(hours=-6)  # CST
    assert (opening.hour, opening.minute) == (8, 0)


def test_next_opening_skips_holidays(office: LineSettings) -> None:
    transfer = office.transfer
    assert not transfer.is_open(chicago(2026, 12, 25, 10, 0))  # Friday, Christmas
    # Thursday at closing -> Christmas Friday -> weekend -> Monday.
    assert transfer.next_opening(chicago(2026, 12, 24, 17, 0)) == chicago(2026, 12, 28, 8, 0)
    # New Year's Day 2027 is a Friday too.
    assert transfer.next_opening(chicago(2026, 12, 31, 18, 0)) == chicago(2027, 1, 4, 8, 0)


def test_next_opening_same_day_and_when_open(office: LineSettings) -> None:
    transfer = office.transfer
    assert transfer.next_opening(chicago(2026, 3, 2, 6, 15)) == chicago(2026, 3, 2, 8, 0)
    now = chicago(2026, 3, 2, 9, 15)
    assert transfer.next_opening(now) == now
    assert transfer.next_opening(now.astimezone(UTC)) == now


def test_next_opening_in_dst_gap() -> None:
    data = settings_data(transfer={"hours": {"sun": "02:30-05:00"}})
    transfer = parse_line_settings(data).transfer
    # 02:30 does not exist on 2026-03-08 in Chicago; the office opens when clocks show 03:30.
    opening = transfer.next_opening(chicago(2026, 3, 7, 12, 0))
    assert opening is not None
    assert opening.astimezone(UTC) == datetime(2026, 3, 8, 8, 30, tzinfo=UTC)
    assert (opening.hour, opening.minute) == (3, 30)


def test_next_opening_never(office: LineSettings) -> None:
    closed = {day: "" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    transfer = parse_line_settings(settings_data(transfer={"hours": closed})).transfer
    assert transfer.next_opening(chicago(2026, 3, 2, 9, 0)) is None
    assert not transfer.is_open(chicago(2026, 3, 2, 9, 0))
    # A holiday run longer than the 14-day lookahead also means None.
    holidays = [(date(2026, 3, 2) + timedelta(days=n)).isoformat() for n in range(15)]
    long_break = parse_line_settings(settings_data(transfer={"holidays": holidays})).transfer
    assert long_break.next_opening(chicago(2026, 3, 2, 0, 0)) is None
    assert office.transfer.next_opening(chicago(2026, 3, 2, 0, 0)) is not None


def test_naive_datetimes_are_refused(office: LineSettings) -> None:
    naive = datetime(2026, 3, 2, 9, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        office.transfer.is_open(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        office.transfer.next_opening(naive)
