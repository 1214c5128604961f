"""Builder for the tiny Llama chat model that tests, benchmarks and demos run on.

No hub download anywhere: the byte-level BPE tokenizer is trained locally on the Python standard library's
``*.py`` files, the weights are random (seeded), and everything is written with ``save_pretrained`` so the
runtime loads it through ``from_pretrained`` exactly like a hub model.

Shape (the one the benchmark figures are documented at): Llama, hidden 384, FFN 1024, 6 layers, 6 heads /
2 KV heads (head_dim 64), vocab 8192, untied embeddings, 15.7M parameters, fp32.

Run as ``python -m runtime.tinymodel PATH [--no-chat-template]``.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

# Bump when the output changes so cached copies (tests/fixtures/models.py) are rebuilt.
BUILDER_VERSION = "1"

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

# Zephyr-style template; the variables are the ones TGI passes (messages, bos_token, eos_token,
# add_generation_prompt). Tool messages render like user turns under their own tag.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% elif message['role'] == 'user' %}<|user|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% elif message['role'] == 'tool' %}<|user|>\n[tool] {{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _training_files() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(str(p) for p in stdlib.glob("*.py"))


def _build_tokenizer(*, chat_template: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(_training_files(), trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        padding_side="left",
        model_max_length=2048,
    )
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(path: str | Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Write the tiny chat model to ``path`` (created if missing) and return it.

    Deterministic: the same ``seed`` gives byte-identical weights and tokenizer. ``chat_template=False`` builds
    the variant without a chat template, which the chat route must refuse with 422.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def cached_tiny_model(*, chat_template: bool = True, cache_root: str | Path | None = None) -> Path:
    """The tiny model built once per machine under ``~/.cache/endpointctl/models/tiny[-notemplate]-<version>``.

    The build goes to a temporary sibling directory that is renamed into place, so concurrent processes (parallel
    test runs, a benchmark) never see a half-written model; the loser of the rename race drops its copy.
    ``ENDPOINTCTL_MODEL_CACHE`` overrides the cache root.
    """
    import os
    import shutil
    import tempfile

    from runtime.realmodels import cache_root as model_cache_root

    root = model_cache_root(cache_root)
    name = "tiny" if chat_template else "tiny-notemplate"
    target = root / f"{name}-{BUILDER_VERSION}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        build_tiny_model(tmp, chat_template=chat_template)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # a real failure, not a lost race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.tinymodel", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="directory to write the model to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat-template", action="store_true", help="omit the chat template")
    args = parser.parse_args(argv)
    out = build_tiny_model(args.path, seed=args.seed, chat_template=not args.no_chat_template)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
