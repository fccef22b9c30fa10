"""The wording's contract with the menus: the prompts they speak, and the keys they name.

"press 2" in a prompt and the choice with key 2 are one fact: the choice is declared in
``ivr.calls.states`` and the wording is checked against it here, in every language and
variant, by `ivr prompts check`, each reload and the console's prompt edit (through
``ivr.prompts.catalog``, which reads this lazily: ``ivr.calls`` imports the prompts package).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ivr.calls.menu import GLOBAL_KEYS
from ivr.prompts.settings import LineSettings

# Markup and placeholders are not wording: <break time="300ms"/>, {last4}.
_NOT_WORDING = re.compile(r"<[^>]*>|\{[^}]*\}")
# A key is a digit standing alone: "press 1", "oprima 1", "Recent payments, 2." (not "50"
# or "1.5").
_KEY = re.compile(r"(?<![\w.,])\d(?![\w]|[.,]\d)")

# language -> prompt id -> variant -> text
Texts = Mapping[str, Mapping[str, Mapping[str, str]]]


def declared_prompts() -> dict[str, tuple[str, ...]]:
    """The prompts the states declare, each with the values it is given: what choices say
    they speak, and the questions (without values unless ivr.prompts.ids lists them)."""
    from ivr.calls.states import STATES

    asked = {prompt_id: () for state in STATES.values() for prompt_id in state.question_prompts}
    spoken = {prompt_id: params for state in STATES.values() for choice in state.choices
              for prompt_id, params in choice.says.items()}
    return {**asked, **spoken}


def named_keys(text: str) -> list[str]:
    """The keys a text names, in order (a digit standing alone)."""
    return _KEY.findall(_NOT_WORDING.sub(" ", text))


def key_problems(texts: Texts, settings: LineSettings | None) -> list[str]:
    """Wording that names a key its state does not accept, one line per key and text.

    ``settings`` gives the keys that depend on the line (one per language); without them
    (broken settings, reported apart) such states are not checked.
    """
    from ivr.calls.states import STATES

    problems: list[str] = []
    for state in STATES.values():
        if state.handle is not None:
            continue  # free entry: digits in its wording are examples ("5 0 0 0, pound")
        if settings is not None:
            choices = state.all_choices(settings)
        elif state.choices_for is None:
            choices = state.choices
        else:
            continue
        keys = {c.key for c in choices} | GLOBAL_KEYS
        shown = ", ".join(sorted(keys, key=lambda k: (k == "0", k)))
        for prompt_id in state.question_prompts:
            for lang in sorted(texts):
                for variant, text in texts[lang].get(prompt_id, {}).items():
                    for key in dict.fromkeys(named_keys(text)):
                        if key not in keys:
                            problems.append(
                                f"{lang}.toml: prompt {prompt_id!r} ({variant}) names key {key}, "
                                f"which the {state.name} menu does not accept "
                                f"(its keys: {shown}; declared in ivr/calls/states/)")
    return problems
