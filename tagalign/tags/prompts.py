"""The LLM instruction, few-shot examples and output schema: the one place to edit the tagging prompt.

The fixed instruction and examples come first and the caption last, so every prompt shares one long prefix that
vLLM's prefix cache computes once.
"""

from __future__ import annotations

import json
import re

__all__ = ["FEW_SHOT", "INSTRUCTION", "OUTPUT_SCHEMA", "VICUNA_SYSTEM", "build_prompt", "chat_prompt", "parse_answer",
           "task_text"]

MAX_TAGS = 12
MAX_TAG_CHARS = 40

INSTRUCTION = (
    "You extract visual tags from an image caption. Return JSON with two lists.\n"
    "Rules:\n"
    '1. "objects": tangible things that are visible in the image: objects, animals, people, body parts, food, '
    "plants, vehicles, buildings, places and stuff such as grass, sky, water or snow. Use the singular noun "
    '("dogs" -> "dog"). Keep compound names whole ("traffic light", "ice cream").\n'
    '2. "attributes": visual properties of those things only: colour, material, pattern, shape, size and '
    'state (e.g. "red", "wooden", "striped", "round", "small", "wet", "broken").\n'
    "3. Do not tag actions, abstract ideas, emotions, events, counts, text, names of people, brands, dates, or "
    'words about the photo itself ("image", "photo", "stock", "illustration", "view").\n'
    "4. Use lowercase and at most a few words per tag. If nothing visible is named, return empty lists."
)

FEW_SHOT = [
    ("A black cat sitting on a red velvet sofa.",
     {"objects": ["cat", "sofa"], "attributes": ["black", "red", "velvet"]}),
    ("Two happy kids running on the wet beach at sunset, stock photo",
     {"objects": ["kid", "beach", "sunset"], "attributes": ["wet"]}),
    ("Vintage wooden table with three glasses of white wine and a striped napkin",
     {"objects": ["table", "glass", "wine", "napkin"], "attributes": ["vintage", "wooden", "white", "striped"]}),
    ("Thinking about the future: business concept",
     {"objects": [], "attributes": []}),
]

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        kind: {"type": "array", "maxItems": MAX_TAGS, "items": {"type": "string", "maxLength": MAX_TAG_CHARS}}
        for kind in ("objects", "attributes")
    },
    "required": ["objects", "attributes"],
    "additionalProperties": False,
}

#: FastChat's vicuna_v1.1 system prompt (Vicuna v1.1/v1.3/v1.5 use it).
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def task_text(caption: str) -> str:
    """Instruction + examples + the caption: the user message."""
    examples = "\n".join(f"Caption: {c}\nAnswer: {json.dumps(a)}" for c, a in FEW_SHOT)
    return f"{INSTRUCTION}\n\nExamples:\n{examples}\n\nCaption: {caption}\nAnswer:"


def build_prompt(caption: str, tokenizer=None) -> str:
    """The tagging request for ``caption`` in the model's chat format (see :func:`chat_prompt`)."""
    return chat_prompt(task_text(caption), tokenizer)


def chat_prompt(message: str, tokenizer=None) -> str:
    """One user message in the model's chat template when its tokenizer has one, otherwise the Vicuna v1.1 format."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return f"{VICUNA_SYSTEM} USER: {message} ASSISTANT:"


_JSON_BLOCK = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(text: str) -> tuple[list[str], list[str]]:
    """``(objects, attributes)`` from a model answer; raises ValueError on anything malformed."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    try:
        data = json.loads(text, strict=False)  # tolerate raw control characters inside strings
    except json.JSONDecodeError:
        match = _JSON_BLOCK.search(text)
        if match is None:
            raise ValueError("no JSON object in the answer") from None
        try:
            data = json.loads(match.group(0), strict=False)
        except json.JSONDecodeError as err:
            raise ValueError(f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    lists = []
    for kind in ("objects", "attributes"):
        value = data.get(kind, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f'"{kind}" must be a list of strings')
        lists.append(value)
    return lists[0], lists[1]
