"""The TwiML text the line answers is exactly what twilio's own ``to_xml`` writes.

``ivr.calls.twiml.twiml_text`` writes the builder's tree in one walk (twilio's pass through
ElementTree was a webhook's largest cost after the database); Twilio must get the same
bytes, whatever the prompt text, the attributes or the tree's shape.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.twiml import GenericNode, TwiML
from twilio.twiml.voice_response import VoiceResponse

from ivr.calls.steps import Ask, Hangup, PayCapture, Silent, Speech, Step, Transfer
from ivr.calls.twiml import TwimlBuilder, twiml_text
from ivr.prompts.catalog import load_catalog

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
# Every character the two escapings treat specially, some that pass through, and non-ASCII.
TEXT = st.text(alphabet=st.sampled_from(list("ab <>&\"'\r\n\t=/ñé€5")), max_size=12)
ATTRIBUTE = st.one_of(TEXT, st.booleans(), st.integers(-5, 500))


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> TwiML:
    node = GenericNode(draw(st.sampled_from(["Say", "Gather", "break", "say-as", "Pay"])),
                       draw(st.one_of(st.none(), TEXT)))
    names = draw(st.lists(st.sampled_from(["action", "timeout", "xml:lang", "for", "b"]),
                          unique=True, max_size=3))
    node.attrs = {name: draw(ATTRIBUTE) for name in names}
    for _ in range(draw(st.integers(0, 0 if depth >= 3 else 4))):
        if draw(st.booleans()):
            node.append(draw(TEXT))  # a string: text, a tail, or one replacing another
        else:
            node.nest(draw(trees(depth + 1)))
    return node


@settings(max_examples=400, deadline=None)
@given(trees())
def test_any_tree_is_written_as_twilio_writes_it(tree: TwiML) -> None:
    response = VoiceResponse()
    response.nest(tree)
    assert twiml_text(response) == str(response)


def test_every_kind_of_answer_is_written_as_twilio_writes_it() -> None:
    catalog = load_catalog(PROMPTS)
    steps: list[Step] = [
        Ask(state="main_menu", speech=(Speech("greeting.welcome"), Speech("common.tips")),
            num_digits=1),
        Transfer(speech=(Speech("common.apology"),), number="+13125550100"),
        Hangup(speech=(Speech("goodbye.thanks"),)),
        Silent(),
        PayCapture(speech=(Speech("common.apology"),), charge_cents=12345,
                   method="credit-card", bank_account_type=None, description="Bill & co <1>"),
        PayCapture(speech=(), charge_cents=5, method="ach-debit",
                   bank_account_type="consumer-savings", description="Water"),
    ]
    for lang in ("en-US", "es-US"):
        builder = TwimlBuilder(catalog, lang, "https://line.example/x?a=1&b=2", "Default")
        for step in steps:
            response = builder.build(step)
            assert twiml_text(response) == str(response)
    # A prompt with SSML inside: <break> copied into the <Say>.
    response = VoiceResponse()
    builder.speak(response, (Speech("common.apology"),))
    say = response.say("Confirmation number ")
    say.nest(GenericNode("break", None, time="300ms"))
    say.append(" 1234.")
    assert twiml_text(response) == str(response)
    assert '<break time="300ms" /> 1234.</Say>' in twiml_text(response)
