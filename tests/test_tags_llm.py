"""LLM tagging without an engine: prompt construction, answer parsing on canned answers, batching and retry.

The real vLLM engine is exercised in test_tags_vllm_engine.py; a random model says nothing about tag quality, so
prompt and answer handling are tested here on fixed texts.
"""

from __future__ import annotations

import json

import pytest

from tagalign.tags.parsers import LLMParser
from tagalign.tags.prompts import FEW_SHOT, OUTPUT_SCHEMA, VICUNA_SYSTEM, build_prompt, parse_answer

pytestmark = pytest.mark.nltk  # NLTK's tagger and WordNet (tests/conftest.py)


class ChatTokenizer:
    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class NoTemplateTokenizer:
    chat_template = None


def test_vicuna_format_without_chat_template():
    prompt = build_prompt("a red bus on a bridge", NoTemplateTokenizer())
    assert prompt.startswith(VICUNA_SYSTEM + " USER: ")
    assert prompt.endswith("Caption: a red bus on a bridge\nAnswer: ASSISTANT:")
    for caption, answer in FEW_SHOT:
        assert f"Caption: {caption}\nAnswer: {json.dumps(answer)}" in prompt


def test_chat_template_is_used_when_present():
    prompt = build_prompt("a red bus", ChatTokenizer())
    assert prompt.startswith("<user>You extract visual tags")
    assert prompt.endswith("Caption: a red bus\nAnswer:<assistant>")


def test_prompts_share_one_prefix_with_the_caption_last():
    first, second = build_prompt("a cat", None), build_prompt("two dogs", None)
    prefix = first[: first.index("Caption: a cat\nAnswer:")]
    assert second.startswith(prefix) and len(prefix) > 500


def test_schema_bounds_the_answer():
    for kind in ("objects", "attributes"):
        assert OUTPUT_SCHEMA["properties"][kind]["maxItems"] > 0
        assert OUTPUT_SCHEMA["properties"][kind]["items"]["maxLength"] > 0
    assert OUTPUT_SCHEMA["required"] == ["objects", "attributes"]


@pytest.mark.parametrize("answer,expected", [
    ('{"objects": ["cat", "sofa"], "attributes": ["black"]}', (["cat", "sofa"], ["black"])),
    ('Sure! {"objects": ["dog"], "attributes": []} Hope this helps.', (["dog"], [])),
    ('{"objects": ["tree"]}', (["tree"], [])),
])
def test_parse_canned_answers(answer, expected):
    assert parse_answer(answer) == expected


@pytest.mark.parametrize("answer,message", [
    ("", "empty"), ("   ", "empty"), ("no json here", "no JSON"), ('{"objects": ["cat", ', "no JSON"),
    ('{"objects": "cat", "attributes": []}', "list of strings"), ("[1, 2]", "not a JSON object"),
])
def test_malformed_answers_raise(answer, message):
    with pytest.raises(ValueError, match=message):
        parse_answer(answer)


class ScriptedGenerator:
    """Stand-in for the engine in batching/retry tests: answers from a script, records every call."""

    def __init__(self, first: dict[str, str], retry: dict[str, str]):
        self.first, self.retry, self.calls = first, retry, []

    def prompt(self, caption: str) -> str:
        return f"P[{caption}]"

    def generate(self, prompts, retry=False):
        self.calls.append((list(prompts), retry))
        table = self.retry if retry else self.first
        return [table.get(p[2:-1]) for p in prompts]


def test_retry_once_then_record_failure_with_raw_text():
    good = '{"objects": ["Cats"], "attributes": ["Black"]}'
    generator = ScriptedGenerator(
        first={"a": good, "b": "garbage", "c": "{broken", "d": '{"objects": [], "attributes": []}'},
        retry={"b": '{"objects": ["dog"], "attributes": []}', "c": "still {broken", "d": "oops"},
    )
    results = LLMParser(generator).parse(["a", "b", "c", "d"])
    assert generator.calls == [(["P[a]", "P[b]", "P[c]", "P[d]"], False), (["P[b]", "P[c]", "P[d]"], True)]
    assert (results[0].objects, results[0].attributes, results[0].status) == (["cat"], ["black"], "ok")
    assert (results[1].objects, results[1].status) == (["dog"], "ok")
    assert results[2].status == "failed" and results[2].raw == "still {broken" and "JSON" in results[2].error
    assert results[3].status == "ok" and results[3].objects == []  # valid, empty, and the retry was no better


def test_prompt_too_long_for_the_context_is_a_recorded_failure():
    generator = ScriptedGenerator(first={"ok": '{"objects": ["cat"], "attributes": []}'}, retry={})
    results = LLMParser(generator).parse(["ok", "too long"])  # the engine answers None for "too long"
    assert results[0].objects == ["cat"]
    assert results[1].status == "failed" and "context" in results[1].error
