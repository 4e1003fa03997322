"""Create a tiny random Llama with a locally trained BPE tokenizer (no downloads), for vLLM tests."""

from __future__ import annotations

import sys
from pathlib import Path

CORPUS = [
    "a black cat sitting on a red sofa", "two dogs playing in the green grass", "objects attributes json",
    '{"objects": ["cat", "sofa"], "attributes": ["black", "red"]}', "a wooden table with glasses of wine",
    "USER: ASSISTANT: A chat between a curious user and an artificial intelligence assistant.",
]


def make_tiny_llama(out: Path, chat_template: bool = False) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat_template:
        fast.chat_template = (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
    fast.save_pretrained(out)
    config = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=8192,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    print(make_tiny_llama(Path(sys.argv[1]), chat_template=len(sys.argv) > 2))
