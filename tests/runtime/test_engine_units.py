"""In-process checks of the engine's parts on the real tiny model: the lean forward against HF's forward and
``generate`` (in fp32, and over bf16/fp16 weights), and stop strings held back across token boundaries."""

from __future__ import annotations

import pytest

from runtime.engine.detokenizer import StopStringMatcher
from tests.runtime.conftest import rounded_reference


def test_stop_matcher_holds_back_partial_matches():
    m = StopStringMatcher(["END"])
    assert m.feed("abc E") == "abc "
    assert m.feed("N") == ""
    assert m.feed("Dzzz") == ""
    assert m.stopped and m.text == "abc "
    m2 = StopStringMatcher(["END"])
    assert m2.feed("xE") == "x"
    assert m2.feed("Nope") == "ENope"
    assert m2.flush() == ""


def test_stop_matcher_include_stop():
    m = StopStringMatcher(["\n\n"], include_stop=True)
    out = m.feed("a\n") + m.feed("\nb")
    assert out == "a\n\n" and m.stopped


@pytest.mark.slow
@pytest.mark.parametrize("use_native", [True, False], ids=["native-kernels", "torch-ops"])
def test_lean_forward_matches_hf(tiny_model_dir, use_native):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engine.model import HFFallbackRunner, LeanDecoderRunner, make_runner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert isinstance(make_runner(model, max_slots=8, max_total_tokens=512), LeanDecoderRunner)
    lean = LeanDecoderRunner(model, max_slots=8, max_total_tokens=512, use_native=use_native)
    assert (lean.kernels is not None) == use_native
    hf = HFFallbackRunner(model, max_slots=8)
    prompts = [tok(p).input_ids for p in ["def main():", "import os\nimport sys\n", "class Foo(Bar):\n    x"]]

    def greedy(runner, steps=20):
        logits = runner.prefill(list(range(len(prompts))), prompts)
        out = [[t] for t in logits.argmax(-1).tolist()]
        pos = [len(p) for p in prompts]
        for _ in range(steps - 1):
            logits = runner.decode([o[-1] for o in out], pos)
            for o, t in zip(out, logits.argmax(-1).tolist(), strict=True):
                o.append(t)
            pos = [p + 1 for p in pos]
        return out, logits

    lean_out, lean_logits = greedy(lean)
    hf_out, hf_logits = greedy(hf)
    assert lean_out == hf_out
    assert torch.allclose(lean_logits, hf_logits, atol=1e-4)
    for prompt, expected in zip(prompts, lean_out, strict=True):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, min_new_tokens=20)
        assert ref[0, len(prompt):].tolist() == expected


def _greedy(runner, prompts: list[list[int]], steps: int = 20):
    """Greedy tokens of ``prompts`` decoded together for ``steps`` tokens, and the last step's logits."""
    logits = runner.prefill(list(range(len(prompts))), prompts)
    out = [[t] for t in logits.argmax(-1).tolist()]
    pos = [len(p) for p in prompts]
    for _ in range(steps - 1):
        logits = runner.decode([o[-1] for o in out], pos)
        for o, t in zip(out, logits.argmax(-1).tolist(), strict=True):
            o.append(t)
        pos = [p + 1 for p in pos]
    return out, logits


HALF_PRECISION = pytest.mark.parametrize("dtype", ["bfloat16", "float16"])


@HALF_PRECISION
def test_half_precision_weights_compute_in_fp32(tiny_model_dir, dtype):
    """DTYPE=bfloat16/float16 on CPU: weights held in 16 bits, widened in the native kernels, everything computed
    in fp32. So the output is HF's fp32 forward over the rounded weights, greedy token for token, alone and
    batched, and bit for bit our own fp32 forward over those weights; and it is closer to the fp32 model than HF's
    own 16-bit forward (which rounds every activation too)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engine import native
    from runtime.engine.model import HFFallbackRunner, LeanDecoderRunner

    dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
    reference = rounded_reference(tiny_model_dir, dtype)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tok(p).input_ids for p in ["def main():", "import os\nimport sys\n", "class Foo(Bar):\n    x"]]

    lean = LeanDecoderRunner(model, max_slots=8, max_total_tokens=512)
    suffix = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    assert lean.kernels_name == f"native-{native.host_isa()}-{suffix}"
    assert all(linear.native_packed.dtype == dtype and linear.weight is None
               for layer in lean.layers for linear in (layer.qkv, layer.o, layer.gate_up, layer.down))
    assert lean.lm_head.native_packed.dtype == dtype and lean.k_cache[0].dtype == torch.float32

    out, logits = _greedy(lean, prompts)
    hf_out, hf_logits = _greedy(HFFallbackRunner(reference, max_slots=8), prompts)
    assert out == hf_out
    torch.testing.assert_close(logits, hf_logits, rtol=0, atol=1e-4)
    for i, prompt in enumerate(prompts):
        assert _greedy(lean, [prompt])[0] == [out[i]]
    fp32_lean = LeanDecoderRunner(reference, max_slots=8, max_total_tokens=512)
    assert fp32_lean.kernels_name == f"native-{native.host_isa()}"
    assert torch.equal(_greedy(fp32_lean, prompts)[1], logits)

    # Teacher-forced over one long text: log-probabilities against the fp32 model's.
    ids = tok("\n".join(f"def f{i}(x):\n    return x * {i} + len(str(x))" for i in range(12))).input_ids
    exact = torch.tensor(HFFallbackRunner(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), max_slots=1,
    ).score_prompt(ids)[1:])
    ours = torch.tensor(lean.score_prompt(ids)[1:])
    theirs = torch.tensor(HFFallbackRunner(model, max_slots=1).score_prompt(ids)[1:])
    torch.testing.assert_close(ours, torch.tensor(HFFallbackRunner(reference, max_slots=1).score_prompt(ids)[1:]),
                               rtol=0, atol=1e-4)
    assert (ours - exact).abs().mean() < (theirs - exact).abs().mean()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_runner_holds_the_weights_once(tiny_model_dir, dtype):
    """The packed weights replace HF's parameters: once the model is dropped none of them stays alive (not even
    through a view, which would keep the checkpoint's file mapping resident), the runner holds about the
    parameters' bytes, and it still scores prompts (prompt log-probabilities) without the model."""
    import gc
    import weakref

    import torch
    from transformers import AutoModelForCausalLM

    from runtime.engine.model import HFFallbackRunner, LeanDecoderRunner

    dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
    ids = list(range(5, 300, 3))
    expected = HFFallbackRunner(rounded_reference(tiny_model_dir, dtype), max_slots=1).score_prompt(ids)
    params = list(model.parameters())
    param_bytes = sum(p.nbytes for p in params)
    alive = [weakref.ref(p) for p in params]
    runner = LeanDecoderRunner(model, max_slots=4, max_total_tokens=512)
    del model, params
    gc.collect()
    assert not [r for r in alive if r() is not None]
    held = [runner.embed, runner.final_norm, runner.lm_head.native_packed] + [
        t for layer in runner.layers
        for t in (layer.ln1, layer.ln2, layer.qkv.native_packed, layer.o.native_packed,
                  layer.gate_up.native_packed, layer.down.native_packed)]
    assert sum(t.nbytes for t in held) < 1.01 * param_bytes
    scores = runner.score_prompt(ids)
    assert scores[0] != scores[0]  # NaN: nothing predicts the first token
    torch.testing.assert_close(torch.tensor(scores[1:]), torch.tensor(expected[1:]), rtol=0, atol=1e-4)


@HALF_PRECISION
def test_tied_embeddings_are_read_from_the_packed_head(dtype):
    """With tied embeddings the LM head's packed 16-bit panels are the only copy of the matrix: token rows are
    gathered out of them. Greedy output equals HF's fp32 forward over the same (rounded) weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from runtime.engine.model import HFFallbackRunner, LeanDecoderRunner

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         tie_word_embeddings=True)
    reference = LlamaForCausalLM(config).eval()
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(p.to(getattr(torch, dtype)))
        model.load_state_dict(reference.state_dict())
        for p in model.parameters():
            p.data = p.data.to(getattr(torch, dtype))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    runner = LeanDecoderRunner(model, max_slots=4, max_total_tokens=256)
    assert runner.embed is None and runner.kernels is not None
    prompts = [[1, 200, 33, 7, 500, 499], [16, 17, 15, 31, 32]]
    out, logits = _greedy(runner, prompts, steps=12)
    hf_out, hf_logits = _greedy(HFFallbackRunner(reference, max_slots=4), prompts, steps=12)
    assert out == hf_out
    torch.testing.assert_close(logits, hf_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("use_native", "dtype"), [(True, "float32"), (False, "float32"), (True, "bfloat16"),
                                                   (True, "float16")],
                         ids=["native-kernels", "torch-ops", "native-bf16-weights", "native-fp16-weights"])
def test_lean_forward_is_bit_identical_alone_and_in_a_batch(tiny_model_dir, use_native, dtype):
    """Greedy equality alone vs. batched rests on this: a sequence's logits do not depend, to the last bit, on
    which other sequences share its prefill or decode step, nor on how long they are (so the key span differs)."""
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.engine.model import LeanDecoderRunner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=getattr(torch, dtype)).eval()
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 37, 70, 12, 130, 64, 1, 99, 23]
    prompts = [torch.randint(3, 500, (n,), generator=gen).tolist() for n in lengths]
    steps = 6

    def run(runner, group):
        """Prefill ``group`` together, decode ``steps`` tokens (fixed inputs), return each step's logits."""
        logits = [runner.prefill(list(range(len(group))), [prompts[i] for i in group])]
        for step in range(steps):
            tokens = [(i * 31 + step * 7) % 500 + 3 for i in group]
            logits.append(runner.decode(tokens, [lengths[i] + step for i in group]))
        return logits

    batched = run(LeanDecoderRunner(model, max_slots=16, max_total_tokens=512, use_native=use_native),
                  list(range(len(prompts))))
    alone_runner = LeanDecoderRunner(model, max_slots=16, max_total_tokens=512, use_native=use_native)
    assert (alone_runner.kernels is not None) == use_native
    for i in range(len(prompts)):
        alone = run(alone_runner, [i])
        for step, (a, b) in enumerate(zip(alone, batched, strict=True)):
            assert torch.equal(a[0], b[i]), f"prompt {i} (length {lengths[i]}) differs at step {step}"


def _run_engine(engine, prompts, *, max_new_tokens):
    import asyncio

    from runtime.engine.params import GenerationRequest, SamplingParams

    async def main():
        engine.start(asyncio.get_running_loop())
        try:
            handles = [
                engine.submit(GenerationRequest(f"r{i}", p, SamplingParams(max_new_tokens=max_new_tokens, temperature=0,
                                                                           ignore_eos=True)))
                for i, p in enumerate(prompts)
            ]
            outs = []
            for h in handles:
                ids = []
                while True:
                    _, event = await h.queue.get()
                    ids.append(event.token_id)
                    if event.finish_reason is not None:
                        break
                outs.append(ids)
            return outs
        finally:
            engine.stop()

    return asyncio.run(main())


def test_unsupported_architecture_falls_back_to_hf_forward(tiny_model_dir):
    """A GPT-2 model is not Llama-style: the engine picks HF's forward and still batches continuously."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from runtime.engine.model import HFFallbackRunner, make_runner
    from runtime.engine.scheduler import Engine, EngineLimits

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2)).eval()
    runner = make_runner(model, max_slots=4, max_total_tokens=256)
    assert isinstance(runner, HFFallbackRunner)
    engine = Engine(runner, tok, limits=EngineLimits(max_batch_size=4, max_batch_prefill_tokens=512,
                                                     max_batch_total_tokens=1024, max_total_tokens=256),
                    eos_token_ids=[tok.eos_token_id])
    prompts = [tok(p).input_ids for p in ["def a():", "import b", "x = 1", "class C:", "for i in"]]
    outs = _run_engine(engine, prompts, max_new_tokens=6)
    for prompt, out in zip(prompts, outs, strict=True):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        assert ref[0, len(prompt):].tolist() == out


def test_admission_respects_prefill_and_total_token_budgets(tiny_model_dir):
    """Prompts count unpadded (they are packed) against MAX_BATCH_PREFILL_TOKENS; reserved tokens (prompt +
    max_new_tokens) of running and admitted sequences against MAX_BATCH_TOTAL_TOKENS; a prompt over the prefill
    budget still runs, alone, rather than wait forever."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engine.model import make_runner
    from runtime.engine.params import GenerationRequest, SamplingParams
    from runtime.engine.scheduler import Engine, EngineLimits

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    runner = make_runner(model, max_slots=8, max_total_tokens=512)

    def engine(prefill, total):
        return Engine(runner, tok, limits=EngineLimits(max_batch_size=8, max_batch_prefill_tokens=prefill,
                                                       max_batch_total_tokens=total, max_total_tokens=512),
                      eos_token_ids=[tok.eos_token_id])

    def submit(e, *lengths, new=10):
        for i, n in enumerate(lengths):
            e.submit(GenerationRequest(f"r{i}", [5] * n, SamplingParams(max_new_tokens=new, temperature=0)))

    e = engine(prefill=100, total=10_000)
    submit(e, 30, 70, 10, 5)
    assert [len(s.prompt_ids) for s in e._admit()] == [30, 70]  # 30 + 70 = 100 fits; + 10 would not
    assert [len(s.prompt_ids) for s in e._admit()] == [10, 5]

    e = engine(prefill=100, total=10_000)
    submit(e, 150, 10)
    assert [len(s.prompt_ids) for s in e._admit()] == [150]  # over the budget: admitted alone
    assert [len(s.prompt_ids) for s in e._admit()] == [10]

    e = engine(prefill=1000, total=100)
    submit(e, 40, 40, 40, new=10)  # 50 reserved each
    first = e._admit()
    assert len(first) == 2
    e._running.extend(first)
    assert e._admit() == []  # 100 reserved by the running ones: the third waits
    e._running.clear()
    assert len(e._admit()) == 1


def test_ngram_proposer_copies_what_followed_the_latest_match():
    from runtime.engine.speculation import NgramProposer

    p = NgramProposer([1, 2, 3, 4, 9, 2, 3])
    assert p.propose(3) == [4, 9, 2]  # "2 3" was last followed by 4
    p.append(7)
    assert p.propose(2) == []  # 7 never appeared before
    p.append(2)
    p.append(3)
    assert p.propose(2) == [7, 2]  # the latest "2 3" (…3 7 2 3) was followed by 7
    assert p.propose(0) == []
    assert NgramProposer([5]).propose(3) == []


def test_speculation_changes_steps_not_tokens(tiny_model_dir):
    """Greedy output with n-gram drafts verified in the decode step equals plain decoding token for token, alone
    and in batches (padding rows are free; a full batch's drafts take paid rows), with ignore_eos, min_tokens,
    stop strings and max_new_tokens all landing mid-draft; and the drafts were really used."""
    import asyncio

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engine.model import make_runner
    from runtime.engine.params import GenerationRequest, SamplingParams
    from runtime.engine.scheduler import Engine, EngineLimits

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    texts = ["a = 1\nb = 2\na = 1\nb = 2\na = 1\n", "def f(x):\n    return x\n" * 3, "import os\nimport sys\n",
             "x = [1, 2, 3]\ny = [1, 2, 3]\n"]
    prompts = [tok(t).input_ids for t in texts]

    def run(speculate, group, params):
        runner = make_runner(model, max_slots=4, max_total_tokens=256)
        engine = Engine(runner, tok, limits=EngineLimits(max_batch_size=4, max_batch_prefill_tokens=1024,
                                                         max_batch_total_tokens=4096, max_total_tokens=256),
                        eos_token_ids=[tok.eos_token_id], speculate=speculate)

        async def main():
            engine.start(asyncio.get_running_loop())
            try:
                handles = [engine.submit(GenerationRequest(f"r{i}", prompts[i], params)) for i in group]
                outs = []
                for h in handles:
                    ids, text = [], ""
                    while True:
                        _, event = await h.queue.get()
                        ids.append(event.token_id)
                        text += event.text
                        if event.finish_reason is not None:
                            outs.append((ids, text, event.finish_reason))
                            break
                return outs
            finally:
                engine.stop()

        return asyncio.run(main()), engine.stats

    cases = [
        SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True),
        SamplingParams(max_new_tokens=37, temperature=0),
        SamplingParams(max_new_tokens=30, temperature=0, min_new_tokens=12),  # EOS masking ends mid-draft
    ]
    accepted = 0
    for params in cases:
        for group in ([0], [1], [0, 1], [0, 1, 2], [0, 1, 2, 3]):  # 4: a full batch, drafts only in paid rows
            plain, _ = run(0, group, params)
            spec, stats = run(3, group, params)
            assert spec == plain, (params, group)
            accepted += stats.spec_accepted_tokens
            assert stats.spec_accepted_tokens <= stats.spec_draft_tokens
    assert accepted > 0  # the drafts were used, not just proposed
    # A stop string found in the middle of verified drafts ends the output exactly where plain decoding does.
    plain, _ = run(0, [0], cases[0])
    stop = plain[0][1][10:14]
    assert stop.strip()
    with_stop = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True, stop=[stop])
    assert run(3, [0], with_stop)[0] == run(0, [0], with_stop)[0]


def _draft_rows(n: int, *, accepted: float = 0.0, proposed: float = 0.0, step: int = 1) -> list[list[int]] | None:
    """The engine's draft allocation for ``n`` running greedy sequences whose history repeats (the n-gram
    proposer always has a continuation), with the given recent acceptance counts."""
    from types import SimpleNamespace

    from runtime.engine.params import SamplingParams
    from runtime.engine.sampling import BatchSampler
    from runtime.engine.scheduler import Engine, EngineLimits
    from runtime.engine.speculation import NgramProposer

    engine = Engine.__new__(Engine)  # only the drafting policy: no model, no thread
    engine.speculate = 3
    engine.sampler = BatchSampler(vocab_size=100, eos_token_ids=[0])
    engine.limits = EngineLimits(64, 4096, 65536, 2048)
    history = [5, 6, 7, 8] * 10
    seqs = [
        SimpleNamespace(stream=SimpleNamespace(cancelled=False),
                        params=SamplingParams(max_new_tokens=100, temperature=0), constraint=None, output_ids=history[:20], prompt_ids=history[20:], length=40,
                        proposer=NgramProposer(history), spec_accepted=accepted, spec_proposed=proposed,
                        decode_steps=step)
        for _ in range(n)
    ]
    return engine._drafts(seqs)


def test_drafts_fill_free_rows_then_pay_one_row_per_sequence_that_earns_it():
    """Free padding rows first (a lone stream: 3 drafts in its 4 rows); beyond them one paid row per sequence
    whose drafts are being accepted, new padding rows lengthening drafts; a sequence whose drafts keep failing
    pays only on probe steps."""
    from runtime.engine.speculation import PAID_DRAFT_PROBE_EVERY

    assert [len(d) for d in _draft_rows(1)] == [3]
    assert [len(d) for d in _draft_rows(32)] == [1] * 32  # 64 rows: every sequence one draft, nothing wasted
    assert [len(d) for d in _draft_rows(31)] == [3] + [1] * 30  # 62 rows padded to 64: 2 free rows to the first
    assert [len(d) for d in _draft_rows(32, accepted=9.0, proposed=10.0)] == [1] * 32
    # Rejected drafts (acceptance 1/11): no paid rows, only the free ones: 30 sequences pad to 32 rows.
    assert [len(d) for d in _draft_rows(30, accepted=0.0, proposed=10.0)] == [2] + [0] * 29
    assert _draft_rows(32, accepted=0.0, proposed=10.0) is None
    probe = _draft_rows(32, accepted=0.0, proposed=10.0, step=PAID_DRAFT_PROBE_EVERY)
    assert [len(d) for d in probe] == [1] * 32


def test_batched_greedy_choices_match_torch_argmax():
    """NumPy's argmax (what the sampler uses on CPU) picks what torch.argmax picks: the first maximum, NaN as
    maximal, on strided views; the EOS-masked choice differs only where the argmax was EOS."""
    import torch

    from runtime.engine.sampling import BatchSampler, argmax_rows

    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 130, generator=gen)
    logits[1, 3] = logits[1, 9] = 50.0  # tie: the first wins
    logits[2, 4] = float("nan")
    logits[6, 0] = 60.0  # EOS (id 0) is this row's argmax
    view = logits[:, :128]
    assert argmax_rows(view) == view.argmax(-1).tolist()
    choices = BatchSampler(vocab_size=128, eos_token_ids=[0]).greedy_choices(logits)
    assert choices.plain == view.argmax(-1).tolist()
    masked = view.clone()
    masked[:, 0] = float("-inf")
    assert choices.no_eos == masked.argmax(-1).tolist()
    assert choices.plain[6] == 0 and choices.no_eos[6] != 0


def test_a_row_whose_grammar_allows_nothing_ends_alone():
    """A constraint that allows no token (a dead end the grammar check could not see) gets EOS — which it refuses,
    ending that sequence — instead of a draw from NaN probabilities that failed the whole batch's step."""
    from types import SimpleNamespace

    import torch

    from runtime.engine.params import SamplingParams
    from runtime.engine.sampling import BatchSampler

    class AllowsNothing:
        def fill_bitmask(self, bitmask, index):
            bitmask[index] = 0

        def accept(self, token_id):
            return False

        def is_terminated(self):
            return False

        def rollback(self, num_tokens):
            return None

    def row(constraint=None, **params):
        return SimpleNamespace(params=SamplingParams(**params), generator=torch.Generator().manual_seed(1),
                               prompt_ids=[5, 6], output_ids=[], constraint=constraint)

    sampler = BatchSampler(vocab_size=64, eos_token_ids=[2])
    logits = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    rows = [row(AllowsNothing(), temperature=1.0, logprobs=True, top_logprobs=2), row(temperature=1.0),
            row(AllowsNothing(), temperature=0.0)]
    dead, free, dead_greedy = sampler.sample(logits, rows)
    assert (dead.token_id, dead.logprob, dead.top) == (2, None, None)
    assert dead_greedy.token_id == 2
    assert 0 <= free.token_id < 64


@pytest.mark.parametrize("params", [{"temperature": 1e-300}, {"temperature": 1.0, "repetition_penalty": 1e-300},
                                    {"temperature": 1e-5, "repetition_penalty": 1e300, "logprobs": True}])
def test_extreme_sampling_parameters_draw_a_token(params):
    """Overflow to inf (a tiny temperature or repetition penalty) must not become NaN probabilities."""
    from types import SimpleNamespace

    import torch

    from runtime.engine.params import SamplingParams
    from runtime.engine.sampling import BatchSampler

    row = SimpleNamespace(params=SamplingParams(**params), generator=torch.Generator().manual_seed(1),
                          prompt_ids=list(range(32)), output_ids=[3], constraint=None)
    logits = torch.randn(1, 64, generator=torch.Generator().manual_seed(0)) * 10
    (sampled,) = BatchSampler(vocab_size=64, eos_token_ids=[2]).sample(logits, [row])
    assert 0 <= sampled.token_id < 64
    assert sampled.logprob is None or sampled.logprob == sampled.logprob  # not NaN
