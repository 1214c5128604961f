"""A minimal greedy decoder over the tiny model, for testing constraints without the server.

Several sequences decode together (left-padded batch, KV cache), each with its own constraint — the same
"constrained and free rows share one forward pass" situation the engine is in. The random-weights model never
writes valid JSON by chance, so anything that validates here was produced by the mask.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.guidance import GrammarConstraint, apply_bitmask, fill_bitmasks


class TinyLM:
    def __init__(self, model_dir: Path, tokenizer) -> None:
        from transformers import AutoModelForCausalLM

        # One thread: on the shared 2-core machine two torch threads contend with everyone else's work and
        # a 40-token decode goes from ~1.5 s to ~40 s.
        torch.set_num_threads(1)
        self.tokenizer = tokenizer
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.vocab_size = self.model.config.vocab_size
        self.eos = tokenizer.eos_token_id

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[str],
        constraints: list[GrammarConstraint | None],
        *,
        max_new_tokens: int = 160,
        logit_bias: dict[int, float] | None = None,
        forced_prefix: str = "",
    ) -> list[tuple[str, bool]]:
        """Greedy decode; returns (text, finished) per prompt. ``finished``: the grammar terminated or EOS.

        ``forced_prefix`` is text every sequence "has already written" (accepted by its constraint and part of
        the returned text) — how a test steers the random model to one branch of a grammar.
        """
        prefix_ids = self.tokenizer(forced_prefix, add_special_tokens=False).input_ids if forced_prefix else []
        enc = self.tokenizer([p + forced_prefix for p in prompts], return_tensors="pt", padding=True)
        ids, attn = enc.input_ids, enc.attention_mask
        batch = len(prompts)
        out: list[list[int]] = [list(prefix_ids) for _ in range(batch)]
        for c in constraints:
            if c is not None:
                for tok in prefix_ids:
                    assert c.accept(tok), f"constraint refused forced prefix token {tok}"
        done = [False] * batch
        past = None
        bitmask = torch.full((batch, (self.vocab_size + 31) // 32), -1, dtype=torch.int32)
        for _step in range(max_new_tokens):
            pos = (attn.cumsum(-1) - 1).clamp_min(0)[:, -ids.shape[1]:]
            res = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[:, -1, :].float()
            if logit_bias:
                for tok, bias in logit_bias.items():
                    logits[:, tok] += bias
            rows = [i for i, c in enumerate(constraints) if c is not None and not done[i]]
            if rows:
                bitmask.fill_(-1)
                fill_bitmasks([constraints[i] for i in rows], bitmask, rows)
                apply_bitmask(logits, bitmask, rows)
            nxt = logits.argmax(-1).tolist()
            for i, tok in enumerate(nxt):
                if done[i]:
                    continue
                c = constraints[i]
                if c is not None:
                    assert c.accept(tok), f"constraint refused token {tok} it allowed"
                    if c.is_terminated():
                        done[i] = True
                        continue
                if tok == self.eos:
                    done[i] = True
                    continue
                out[i].append(tok)
            if all(done):
                break
            ids = torch.tensor([[t] for t in nxt])
            attn = torch.cat([attn, torch.ones((batch, 1), dtype=attn.dtype)], dim=1)
        return [(self.tokenizer.decode(o, skip_special_tokens=True), d) for o, d in zip(out, done, strict=True)]
