"""Prompt pages: the catalog per language, the editor with preview, history and revert."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, send_file, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from ivr.models import PromptVersion
from ivr.ops import audio, call_time, prompt_edit
from ivr.ops.base import bp, database, instance_dir, now, prompts_dir, store, username
from ivr.ops.prompt_edit import Change, EditRefused
from ivr.ops.prompt_usage import ANY_STATE, usage_for
from ivr.ops.samples import PreviewError, render_draft, sample_values
from ivr.prompts.catalog import VARIANTS, Catalog
from ivr.prompts.spoken import RATE_WPM
from ivr.simulator.timing import ENTRY_SECONDS, TURN_SECONDS

LANGUAGE_NAMES = {"en": "English", "es": "Spanish"}


def language_name(tag: str) -> str:
    """"English (en-US)"."""
    return f"{LANGUAGE_NAMES.get(tag.split('-')[0], tag)} ({tag})"


def _fresh_catalog() -> tuple[Catalog, list[str]]:
    """The current prompts, checked now (the database's version, which every node speaks
    from its next call), and what is wrong with this node's prompts folder, if anything."""
    current = store().refresh()
    return current, list(store().problems)


def _current_texts(catalog: Catalog, prompt_id: str) -> dict[tuple[str, str], str | None]:
    return prompt_edit.texts_of(catalog.sources, prompt_id)


def _lock_path() -> Any:
    return instance_dir() / "prompts-edit.lock"


def _audio_dir() -> Any:
    return instance_dir() / "prompt-audio"


@bp.get("/prompts")
def prompts() -> str:
    """Every prompt id of one language with its text, variants and the states that use it."""
    catalog, problems = _fresh_catalog()
    lang = request.args.get("lang", catalog.settings.default_language)
    if lang not in catalog.languages:
        lang = catalog.settings.default_language
    query = request.args.get("q", "").strip()[:100]
    rows = []
    for prompt_id in catalog.ids():
        raw = catalog.raw(prompt_id, lang)
        texts = {v: raw[v] for v in VARIANTS if v in raw}
        if query and query.lower() not in prompt_id.lower() and not any(
                query.lower() in t.lower() for t in texts.values()):
            continue
        rows.append({"id": prompt_id, "texts": texts, "note": raw.get("note", ""),
                     "audio": raw.get("audio", ""), "usage": usage_for(prompt_id)})
    spoken = call_time.lengths(instance_dir())
    seconds = call_time.prompt_seconds(catalog, lang, [str(row["id"]) for row in rows], spoken)
    happy = call_time.happy_path(catalog, prompts_dir(), call_time.cache_file(instance_dir()))
    return render_template("ops/prompts.html", title="Prompts", rows=rows, lang=lang,
                           languages=catalog.languages, language_name=language_name,
                           query=query, problems=problems, any_state=ANY_STATE,
                           seconds=seconds, happy=happy, rate=RATE_WPM,
                           turn_seconds=TURN_SECONDS, entry_seconds=ENTRY_SECONDS)


@dataclass
class _Preview:
    language: str
    variant: str
    text: str = ""
    audio_url: str = ""
    error: str = ""


def _editor(prompt_id: str, *, drafts: dict[tuple[str, str], str] | None = None,
            errors: list[str] | None = None, preview: _Preview | None = None,
            samples: dict[str, dict[str, str]] | None = None, note: str = "",
            status: int = 200) -> tuple[str, int]:
    catalog, problems = _fresh_catalog()
    if prompt_id not in catalog.ids():
        abort(404)
    current = _current_texts(catalog, prompt_id)
    usage = usage_for(prompt_id)
    placeholders = sorted(usage.placeholders)
    defaults = {lang: sample_values(catalog, lang) for lang in catalog.languages}
    chosen = {lang: {name: (samples or {}).get(lang, {}).get(name, defaults[lang].get(name, ""))
                     for name in placeholders} for lang in catalog.languages}
    with database().session() as db:
        versions = list(db.scalars(select(PromptVersion)
                                   .where(PromptVersion.prompt_id == prompt_id)
                                   .order_by(PromptVersion.at.desc(), PromptVersion.id.desc())
                                   .limit(100)))
    raw = {lang: catalog.raw(prompt_id, lang) for lang in catalog.languages}
    return render_template(
        "ops/prompt_edit.html", title=f"Prompt {prompt_id}", prompt_id=prompt_id,
        languages=catalog.languages, variants=VARIANTS, current=current,
        drafts=drafts or {}, errors=errors or [], problems=problems, usage=usage,
        placeholders=placeholders, samples=chosen, preview=preview, versions=versions,
        notes={lang: raw[lang].get("note", "") for lang in catalog.languages},
        audio_files={lang: raw[lang].get("audio", "") for lang in catalog.languages},
        language_name=language_name, any_state=ANY_STATE, note=note), status


@bp.get("/prompts/<prompt_id>")
def prompt(prompt_id: str) -> tuple[str, int]:
    """The editor for one prompt id, every language and variant at once."""
    return _editor(prompt_id)


def _field(kind: str, lang: str, variant: str) -> str:
    return f"{kind}:{lang}:{variant}"


def _form_changes(form: MultiDict[str, str],
                  current: dict[tuple[str, str], str | None]) -> tuple[list[Change],
                                                                        dict[tuple[str, str],
                                                                             str]]:
    """The changes a submitted editor asks for, and the drafts to show again."""
    changes: list[Change] = []
    drafts: dict[tuple[str, str], str] = {}
    for lang, variant in current:
        text = form.get(_field("text", lang, variant))
        if text is None:
            continue
        drafts[(lang, variant)] = text
        had = form.get(_field("had", lang, variant)) == "1"
        expected = form.get(_field("orig", lang, variant), "") if had else None
        # An empty optional variant means "none"; an empty `say` is refused by the check.
        new = text if (text.strip() or variant == "say") else None
        if not had and new is None:
            continue
        changes.append(Change(lang, variant, expected, new))
    return changes, drafts


def _form_samples(form: MultiDict[str, str]) -> dict[str, dict[str, str]]:
    samples: dict[str, dict[str, str]] = {}
    for key, value in form.items():
        kind, _, rest = key.partition(":")
        lang, _, name = rest.partition(":")
        if kind == "sample" and lang and name:
            samples.setdefault(lang, {})[name] = value[:200]
    return samples


@bp.post("/prompts/<prompt_id>")
def prompt_save(prompt_id: str) -> ResponseReturnValue:
    """Apply an edit when the whole catalog still passes `ivr prompts check`."""
    catalog, _ = _fresh_catalog()
    if prompt_id not in catalog.ids():
        abort(404)
    current = _current_texts(catalog, prompt_id)
    changes, drafts = _form_changes(request.form, current)
    note = request.form.get("note", "")[:prompt_edit.MAX_NOTE]
    try:
        with database().session() as db:
            versions = prompt_edit.save_edit(db, prompts_dir(), prompt_id, changes,
                                             username=username(), note=note, now=now(),
                                             lock_path=_lock_path())
            done = ", ".join(f"{v.language} {v.variant}" for v in versions)
    except EditRefused as refused:
        return _editor(prompt_id, drafts=drafts, errors=refused.problems, note=note,
                       samples=_form_samples(request.form),
                       status=409 if refused.conflict else 400)
    flash(f"Saved {done}. Callers hear the new wording from their next call.", "success")
    return redirect(url_for("ops.prompt", prompt_id=prompt_id))


@bp.post("/prompts/<prompt_id>/preview")
def prompt_preview(prompt_id: str) -> tuple[str, int]:
    """Render a draft with sample values and synthesise it for the browser's audio player."""
    catalog, _ = _fresh_catalog()
    if prompt_id not in catalog.ids():
        abort(404)
    current = _current_texts(catalog, prompt_id)
    _, drafts = _form_changes(request.form, current)
    samples = _form_samples(request.form)
    lang, _, variant = request.form.get("preview", "").partition(":")
    if (lang, variant) not in current:
        abort(400)
    shown = _Preview(lang, variant)
    text = prompt_edit.normalize(drafts.get((lang, variant), "")) or ""
    status = 200
    try:
        if not text.strip():
            raise PreviewError("there is no text to preview")
        ssml = render_draft(text, samples.get(lang, {}))
        shown.text = _plain(ssml)
        key = audio.synthesize(ssml, lang, _audio_dir())
        shown.audio_url = url_for("ops.preview_audio", key=key)
    except (PreviewError, audio.AudioError) as exc:
        shown.error = str(exc)
        status = 400
    return _editor(prompt_id, drafts=drafts, preview=shown, samples=samples,
                   note=request.form.get("note", ""), status=status)


def _plain(ssml: str) -> str:
    try:
        root = ET.fromstring(f"<speak>{ssml}</speak>")  # noqa: S314 - our own draft text
    except ET.ParseError as exc:
        raise PreviewError(f"the text is not valid SSML: {exc}") from None
    return " ".join("".join(root.itertext()).split())


@bp.get("/audio/<key>.wav")
def preview_audio(key: str) -> Response:
    """A synthesised preview (only files this console made: the key is a hash)."""
    path = audio.cached(_audio_dir(), key)
    if path is None:
        abort(404)
    return send_file(path, mimetype="audio/wav", max_age=0)


@bp.post("/prompts/<prompt_id>/revert/<row_id:version_id>")
def prompt_revert(prompt_id: str, version_id: int) -> ResponseReturnValue:
    """Put back the text from before a change, as a new (recorded) change."""
    with database().session() as db:
        version = db.get(PromptVersion, version_id)
        if version is None or version.prompt_id != prompt_id:
            abort(404)
        had = request.form.get("had") == "1"
        change = Change(version.language, version.variant,
                        request.form.get("expected", "") if had else None, version.old_text)
        try:
            prompt_edit.save_edit(db, prompts_dir(), prompt_id, [change], username=username(),
                                  note=f"revert of change #{version.id}", now=now(),
                                  lock_path=_lock_path())
        except EditRefused as refused:
            db.rollback()
            return _editor(prompt_id, errors=refused.problems,
                           status=409 if refused.conflict else 400)
    flash(f"Reverted change #{version_id} ({change.language} {change.variant}). Callers hear "
          "the restored wording from their next call.", "success")
    return redirect(url_for("ops.prompt", prompt_id=prompt_id))


@bp.get("/prompt-history")
def prompt_history() -> str:
    """Every change made in the console, newest first."""
    with database().session() as db:
        versions = list(db.scalars(select(PromptVersion)
                                   .order_by(PromptVersion.at.desc(), PromptVersion.id.desc())
                                   .limit(300)))
    return render_template("ops/prompt_history.html", title="Prompt history",
                           versions=versions, language_name=language_name)
