"""Tag parsers: ``NLTKParser`` (POS baseline, paper Table 4) and ``LLMParser`` (vLLM, the paper's method).

A parser maps a batch of captions to :class:`ParseResult` s; tags come out normalised (see normalize.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .normalize import normalize_tags
from .prompts import OUTPUT_SCHEMA, build_prompt, parse_answer

logger = logging.getLogger(__name__)

__all__ = ["LLMParser", "NLTKParser", "ParseResult", "TagParser", "TextGenerator", "VLLMGenerator", "make_llm"]

OBJECT_POS = ("NN", "NNS")
ATTRIBUTE_POS = ("JJ", "JJR", "JJS")


@dataclass
class ParseResult:
    objects: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    raw: str | None = None  # the model's answer, kept for failed LLM parses


class TagParser(Protocol):
    name: str

    def parse(self, captions: Sequence[str]) -> list[ParseResult]: ...


class NLTKParser:
    """Nouns (NN, NNS) as objects and adjectives (JJ*) as attributes from NLTK's perceptron tagger.

    Tagger errors (e.g. an adjective read as a noun) are kept on purpose: they are what the baseline measures.
    """

    name = "nltk"

    def __init__(self, stop_words: Iterable[str] = ()):
        from nltk.tokenize import TreebankWordTokenizer

        from .nltk_data import lemmatizer, pos_tagger

        self.tokenizer = TreebankWordTokenizer()
        self.tagger = pos_tagger()
        lemmatizer()
        self.stop_words = frozenset(stop_words)

    def parse(self, captions: Sequence[str]) -> list[ParseResult]:
        results = []
        for caption in captions:
            tagged = self.tagger.tag(self.tokenizer.tokenize(caption))
            objects = [word for word, pos in tagged if pos in OBJECT_POS]
            attributes = [word for word, pos in tagged if pos in ATTRIBUTE_POS]
            results.append(ParseResult(normalize_tags(objects, "object", self.stop_words),
                                       normalize_tags(attributes, "attribute", self.stop_words)))
        return results


class TextGenerator(Protocol):
    """Turns captions into prompts and prompts into answers (one answer per prompt)."""

    def prompt(self, caption: str) -> str: ...

    def generate(self, prompts: Sequence[str], retry: bool = False) -> list[str | None]:
        """One answer per prompt; None for a prompt the model cannot take (longer than its context)."""
        ...


def make_llm(model: str, tensor_parallel_size: int = 1, max_model_len: int = 2048,
             gpu_memory_utilization: float = 0.9, dtype: str = "auto", seed: int = 0, **engine_kwargs):
    """vLLM's offline engine with prefix caching (shared by tag parsing and tag descriptions)."""
    from vllm import LLM

    return LLM(model=model, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
               gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed, enable_prefix_caching=True,
               **engine_kwargs)


class VLLMGenerator:
    """vLLM's offline engine with JSON-schema structured output, prefix caching and greedy decoding.

    Retries sample at ``retry_temperature`` so a second attempt can differ from the greedy first one.
    """

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        max_model_len: int = 2048,
        max_tokens: int = 256,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        seed: int = 0,
        retry_temperature: float = 0.7,
        **engine_kwargs,
    ):
        self.llm = make_llm(model, tensor_parallel_size, max_model_len, gpu_memory_utilization, dtype, seed,
                            **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_prompt_tokens = max_model_len - max_tokens
        self.max_tokens = max_tokens
        self.seed = seed
        self.retry_temperature = retry_temperature

    def prompt(self, caption: str) -> str:
        return build_prompt(caption, self.tokenizer)

    def _sampling(self, retry: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=self.retry_temperature if retry else 0.0,
            seed=self.seed + 1 if retry else None,
            max_tokens=self.max_tokens,
            structured_outputs=StructuredOutputsParams(json=OUTPUT_SCHEMA, disable_any_whitespace=True),
        )

    def generate(self, prompts: Sequence[str], retry: bool = False) -> list[str | None]:
        # vLLM rejects a whole batch if one prompt exceeds the context: leave such prompts out (answer None).
        fits = [len(self.tokenizer.encode(p)) <= self.max_prompt_tokens for p in prompts]
        runnable = [p for p, ok in zip(prompts, fits) if ok]
        outputs = iter(self.llm.generate(runnable, self._sampling(retry), use_tqdm=False) if runnable else [])
        return [next(outputs).outputs[0].text if ok else None for ok in fits]


class LLMParser:
    """Batched LLM tagging; a malformed or empty answer is retried once, then recorded as failed with its text.

    A valid answer with no tags is also retried once; if the retry is valid and still empty, the caption is
    ``ok`` with no tags (it names nothing visible).
    """

    name = "vllm"

    def __init__(self, generator: TextGenerator, stop_words: Iterable[str] = ()):
        self.generator = generator
        self.stop_words = frozenset(stop_words)

    def _interpret(self, text: str | None) -> ParseResult:
        if text is None:
            return ParseResult(status="failed", error="prompt longer than the model's context (--max-model-len)")
        try:
            objects, attributes = parse_answer(text)
        except ValueError as err:
            return ParseResult(status="failed", error=str(err), raw=text)
        return ParseResult(normalize_tags(objects, "object", self.stop_words),
                           normalize_tags(attributes, "attribute", self.stop_words))

    def parse(self, captions: Sequence[str]) -> list[ParseResult]:
        prompts = [self.generator.prompt(caption) for caption in captions]
        results = [self._interpret(text) for text in self.generator.generate(prompts)]
        again = [i for i, r in enumerate(results) if r.status == "failed" or not (r.objects or r.attributes)]
        if again:
            answers = self.generator.generate([prompts[i] for i in again], retry=True)
            for index, text in zip(again, answers):
                retried = self._interpret(text)
                if retried.status == "ok" or results[index].status == "failed":
                    results[index] = retried
        return results
