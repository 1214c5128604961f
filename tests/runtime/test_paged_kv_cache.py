"""The paged KV cache: block bookkeeping (runtime/engine/kv_cache.py), the pool's sizing from memory, the native
attention through block tables, and the scheduler waiting or preempting when blocks run out."""

from __future__ import annotations

import asyncio

import pytest
import torch

from runtime.engine.kv_cache import BLOCK_SIZE, NULL_BLOCK, OutOfBlocks, PagedKVCache, pool_blocks


def _cache(blocks: int = 9, *, slots: int = 4, prefix: bool = True) -> PagedKVCache:
    return PagedKVCache(num_blocks=blocks, slots=slots, max_blocks_per_seq=8, prefix_caching=prefix)


def test_blocks_are_taken_as_sequences_grow_and_given_back_all_or_nothing():
    kv = _cache(9)  # 8 usable blocks (block 0 is the null block)
    assert kv.capacity_tokens == 8 * BLOCK_SIZE and kv.available() == 8
    kv.allocate(0, 1)
    kv.allocate(0, BLOCK_SIZE)  # still one block
    assert len(kv.blocks(0)) == 1
    kv.allocate(0, BLOCK_SIZE + 1)
    assert len(kv.blocks(0)) == 2 and kv.usage() == 2 / 8
    assert kv.tables[0, :2].tolist() == kv.blocks(0) and NULL_BLOCK not in kv.blocks(0)
    assert kv.tables[0, 2:].tolist() == [NULL_BLOCK] * 6
    with pytest.raises(OutOfBlocks):
        kv.allocate(1, 7 * BLOCK_SIZE)  # 7 needed, 6 left: nothing taken
    assert kv.available() == 6 and kv.blocks(1) == []
    kv.move(0, 1)
    assert kv.blocks(0) == [] and len(kv.blocks(1)) == 2 and kv.tables[0].tolist() == [0] * 8
    kv.free(1)
    assert kv.available() == 8 and kv.used == 0 and kv.tables[1].tolist() == [0] * 8


def test_a_prompt_reuses_the_cached_blocks_of_its_prefix_and_evicts_lru_when_short():
    kv = _cache(9)
    prompt = list(range(3 * BLOCK_SIZE + 5))
    kv.allocate(0, len(prompt))
    kv.commit(0, prompt, len(prompt))  # three full blocks named, the partial one not
    first = kv.blocks(0)
    assert kv.cached_blocks() == 3
    # Same first two blocks, different third: two blocks shared (reference counted), the rest new.
    other = prompt[:2 * BLOCK_SIZE] + [999] * 20
    assert kv.match_prefix(1, other) == 2 * BLOCK_SIZE
    assert kv.blocks(1) == first[:2] and kv.refs[first[0]] == 2
    kv.allocate(1, len(other))
    assert kv.blocks(1)[2] not in first
    # The first sequence leaves: its named blocks stay cached (evictable), its partial one is free again.
    kv.free(0)
    assert kv.cached_blocks() == 3 and kv.available() == 8 - 4
    assert kv.match_prefix(2, prompt) == 3 * BLOCK_SIZE  # all three full blocks, including the evictable one
    kv.free(2)
    kv.free(1)
    # Needing every block evicts the cached ones (least recently used first) rather than failing.
    kv.allocate(3, 8 * BLOCK_SIZE)
    assert kv.cached_blocks() == 0 and kv.available() == 0
    kv.free(3)
    assert kv.match_prefix(0, prompt) == 0


def test_a_fully_cached_prompt_copies_its_last_block_before_recomputing_the_last_token():
    kv = _cache(9)
    copies: list[tuple[int, int]] = []
    kv.copy_block = lambda src, dst: copies.append((src, dst))
    prompt = list(range(2 * BLOCK_SIZE))
    kv.allocate(0, len(prompt))
    kv.commit(0, prompt, len(prompt))
    shared = kv.blocks(0)
    assert kv.match_prefix(1, prompt) == len(prompt) - 1  # the last token's logits start generation
    mine = kv.blocks(1)
    assert mine[0] == shared[0] and mine[1] != shared[1]  # copy-on-write of the block it will write into
    assert copies == [(shared[1], mine[1])] and kv.refs[shared[1]] == 1
    kv.allocate(1, len(prompt))
    assert kv.blocks(1) == mine


def test_prefix_caching_off_matches_nothing_and_names_nothing():
    kv = _cache(9, prefix=False)
    prompt = list(range(2 * BLOCK_SIZE))
    kv.allocate(0, len(prompt))
    kv.commit(0, prompt, len(prompt))
    assert kv.cached_blocks() == 0 and kv.match_prefix(1, prompt) == 0


def test_block_names_chain_through_the_parent():
    """A block's name covers everything before it: the same 16 tokens after a different prefix do not match."""
    kv = _cache(9)
    a = [1] * BLOCK_SIZE + [2] * BLOCK_SIZE
    kv.allocate(0, len(a))
    kv.commit(0, a, len(a))
    b = [3] * BLOCK_SIZE + [2] * BLOCK_SIZE + [4]
    assert kv.match_prefix(1, b) == 0


GIB = 2**30


def test_the_pool_is_sized_from_max_batch_total_tokens_or_from_memory():
    common = {"bytes_per_token": 1024, "max_total_tokens": 4096, "max_batch_size": 32, "cpu_fraction": 0.5,
              "gpu_memory_utilization": 0.9}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # Set explicitly: exactly that (rounded up to blocks), on any device.
    size = pool_blocks(device=cpu, max_batch_total_tokens=10_001, **common)
    assert (size.num_blocks - 1) * BLOCK_SIZE == 10_016
    # CPU: a fraction of what is available (128 MiB here) ...
    size = pool_blocks(device=cpu, max_batch_total_tokens=None, host_available=lambda: GIB // 8, **common)
    assert (size.num_blocks - 1) * BLOCK_SIZE * 1024 == GIB // 16
    # ... but never beyond every slot at full length.
    size = pool_blocks(device=cpu, max_batch_total_tokens=None, host_available=lambda: 1024 * GIB, **common)
    assert (size.num_blocks - 1) * BLOCK_SIZE == 32 * 4096
    # CUDA: total x utilisation minus what is in use after loading and warming up (vLLM's rule).
    size = pool_blocks(device=cuda, max_batch_total_tokens=None, cuda_mem_get_info=lambda: (30 * GIB, 40 * GIB),
                       **common)
    assert size.num_blocks * BLOCK_SIZE * 1024 == int(40 * GIB * 0.9) - 10 * GIB
    # Smaller than one sequence at full length: start-up fails with the numbers.
    with pytest.raises(OutOfBlocks, match="MAX_TOTAL_TOKENS=4096"):
        pool_blocks(device=cuda, max_batch_total_tokens=None, cuda_mem_get_info=lambda: (1 * GIB, 40 * GIB),
                    **common)


def test_the_cpu_pool_respects_the_cgroup_limit(monkeypatch, tmp_path):
    from runtime.engine import kv_cache

    real_read = kv_cache.Path.read_text
    files = {"/sys/fs/cgroup/memory.max": str(3 * GIB), "/sys/fs/cgroup/memory.current": str(1 * GIB),
             "/proc/meminfo": "MemTotal: 100000000 kB\nMemAvailable: 90000000 kB\n"}

    def read_text(self, *args, **kwargs):
        return files[str(self)] if str(self) in files else real_read(self, *args, **kwargs)

    monkeypatch.setattr(kv_cache.Path, "read_text", read_text)
    assert kv_cache.available_host_memory() == 2 * GIB  # the cgroup's headroom, not the host's 85 GiB
    files["/sys/fs/cgroup/memory.max"] = "max"
    assert kv_cache.available_host_memory() == 90000000 * 1024


def test_native_attention_reads_keys_and_values_through_scattered_blocks():
    """The same attention over a contiguous cache and over the same keys scattered in shuffled blocks: the same
    bits (block tables change where keys are, never how they are summed)."""
    from runtime.engine import native

    kernels = native.load()
    gen = torch.Generator().manual_seed(0)
    nh, nkv, hd, length = 4, 2, 32, 3 * BLOCK_SIZE + 5
    blocks = -(-length // BLOCK_SIZE)
    angles = torch.arange(64)[:, None] * (1e-2 * torch.arange(1, hd // 2 + 1))[None]
    cos = torch.cat([angles.cos()] * 2, -1).contiguous()
    ssin = torch.cat([-angles.sin(), angles.sin()], -1).contiguous()
    keys = torch.randn(nkv, blocks * BLOCK_SIZE, hd, generator=gen)
    values = torch.randn(nkv, blocks * BLOCK_SIZE, hd, generator=gen)
    qkv = torch.randn(4, (nh + 2 * nkv) * hd, generator=gen)
    positions = torch.tensor([length - 1, 7, length - 4, 0], dtype=torch.int32)

    contiguous_k, contiguous_v = keys[None].clone(), values[None].clone()  # one slot, one block of every position
    want = kernels.attention(qkv, 4, positions, torch.zeros(4, dtype=torch.int32), cos, ssin, contiguous_k,
                             contiguous_v, nh, hd**-0.5, torch.empty(4, nh * hd), 1)

    order = torch.randperm(blocks, generator=gen) + 1  # block 0 stays the null block
    pool_k = torch.zeros(blocks + 1, nkv, BLOCK_SIZE, hd)
    pool_v = torch.zeros_like(pool_k)
    for i, block in enumerate(order.tolist()):
        pool_k[block] = keys[:, i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
        pool_v[block] = values[:, i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
    tables = torch.zeros(2, 8, dtype=torch.int32)
    tables[1, :blocks] = order.to(torch.int32)  # the sequence is slot 1
    got = kernels.attention(qkv, 4, positions, torch.ones(4, dtype=torch.int32), cos, ssin, pool_k, pool_v, nh,
                            hd**-0.5, torch.empty(4, nh * hd), 1, block_tables=tables)
    assert torch.equal(got, want)
    # The rows' own keys went where their tables say.
    for row, position in enumerate(positions.tolist()):
        block = order[position // BLOCK_SIZE]
        assert torch.equal(pool_v[block, :, position % BLOCK_SIZE], contiguous_v[0, :, position])


def _tiny_engine(tiny_model_dir, *, num_blocks: int, use_native: bool = True, prefix_caching: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engine.model import LeanDecoderRunner
    from runtime.engine.scheduler import Engine, EngineLimits

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    runner = LeanDecoderRunner(model, max_slots=8, max_total_tokens=256, use_native=use_native,
                               num_blocks=num_blocks, prefix_caching=prefix_caching)
    limits = EngineLimits(max_batch_size=8, max_batch_prefill_tokens=2048,
                          max_batch_total_tokens=runner.kv.capacity_tokens, max_total_tokens=256)
    return Engine(runner, tok, limits=limits, eos_token_ids=[tok.eos_token_id], prefix_caching=prefix_caching)


async def _run_all(engine, prompts: list[list[int]], *, max_new_tokens: int) -> list[list[int]]:
    from runtime.engine.params import GenerationRequest, SamplingParams, TokenEvent

    engine.start(asyncio.get_running_loop())
    try:
        handles = [engine.submit(GenerationRequest(f"r{i}", p, SamplingParams(max_new_tokens=max_new_tokens,
                                                                               temperature=0, ignore_eos=True)))
                   for i, p in enumerate(prompts)]
        outputs = []
        for handle in handles:
            ids = []
            while True:
                _, event = await handle.queue.get()
                assert isinstance(event, TokenEvent), event
                ids.append(event.token_id)
                if event.finish_reason is not None:
                    break
            outputs.append(ids)
        return outputs
    finally:
        engine.stop()


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
def test_when_blocks_run_out_the_newest_is_preempted_and_every_request_completes_the_same(tiny_model_dir,
                                                                                           use_native):
    """Eight sequences growing to 120 positions each on a pool of 24 blocks (384 positions, a third of what they
    need together): sequences wait or are preempted and resumed, none fails, and each one's greedy tokens are
    exactly those it produces with room to spare."""
    prompts = [[(7 * i + j) % 200 + 3 for j in range(40 + 3 * i)] for i in range(8)]
    tight = _tiny_engine(tiny_model_dir, num_blocks=25, use_native=use_native, prefix_caching=False)
    roomy = _tiny_engine(tiny_model_dir, num_blocks=8 * 16 + 1, use_native=use_native, prefix_caching=False)
    got = asyncio.run(_run_all(tight, prompts, max_new_tokens=80))
    want = asyncio.run(_run_all(roomy, prompts, max_new_tokens=80))
    assert got == want and all(len(ids) == 80 for ids in got)
    assert tight.stats.preemptions > 0 and roomy.stats.preemptions == 0
    assert tight.kv.used == 0  # every block back once everything finished


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
def test_a_prompt_prefilled_after_its_cached_prefix_gives_the_logits_of_a_whole_prefill(tiny_model_dir, use_native):
    """The rest of a prompt computed over a shared prefix's blocks: the same logits as the prompt prefilled whole
    (bit for bit on the native kernels; to rounding on PyTorch's attention, whose masked kernel sums differently),
    and the decode step after it too."""
    from transformers import AutoModelForCausalLM

    from runtime.engine.model import LeanDecoderRunner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    runner = LeanDecoderRunner(model, max_slots=4, max_total_tokens=256, use_native=use_native)
    kv = runner.kv
    shared = [(5 * i) % 300 + 3 for i in range(3 * BLOCK_SIZE)]
    prompt = shared + [7, 8, 9, 10, 11]
    whole = runner.prefill([0], [prompt])
    kv.commit(0, prompt, len(prompt))
    cached = kv.match_prefix(1, prompt)
    assert cached == len(shared) and kv.blocks(1)[:3] == kv.blocks(0)[:3]
    part = runner.prefill([1], [prompt], [cached])
    step = runner.decode([42, 42], [len(prompt), len(prompt)], [0, 1])
    if use_native:
        assert torch.equal(part, whole) and torch.equal(step[0], step[1])
    else:
        torch.testing.assert_close(part, whole, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(step[0], step[1], rtol=1e-4, atol=1e-4)


def test_a_batch_prefilled_in_chunks_of_rows_gives_the_logits_and_keys_of_one_call(tiny_model_dir, monkeypatch):
    """The native prefill runs long batches in chunks of rows (bounded activations): the same logits and the same
    keys and values in the blocks, bit for bit, as one call over every row, with prompts ending inside a chunk, on
    its last row and spanning several."""
    from transformers import AutoModelForCausalLM

    from runtime.engine import model as model_module
    from runtime.engine.model import LeanDecoderRunner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [[(7 * i + j) % 300 + 3 for i in range(n)] for j, n in enumerate((13, 3, 40, 8, 21))]
    results = []
    for chunk in (4096, 8):
        monkeypatch.setattr(model_module, "PREFILL_CHUNK_ROWS", chunk)
        runner = LeanDecoderRunner(model, max_slots=8, max_total_tokens=256, use_native=True)
        if runner.kernels is None:
            pytest.fail("the native kernels did not build on this machine")
        logits = runner.prefill(list(range(len(prompts))), prompts)
        # Each prompt's written positions (the pool is uninitialised past them): (kv heads, positions, head dim).
        keys = [torch.cat([runner.k_cache[layer][b] for b in runner.kv.blocks(s)], dim=1)[:, :len(prompt)]
                for s, prompt in enumerate(prompts) for layer in (0, len(runner.layers) - 1)]
        results.append((logits, keys))
    (whole, whole_keys), (chunked, chunked_keys) = results
    assert chunked.shape == (len(prompts), whole.shape[1]) and torch.equal(chunked, whole)
    assert all(torch.equal(a, b) for a, b in zip(whole_keys, chunked_keys, strict=True))
