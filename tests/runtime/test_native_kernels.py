"""The native decode kernels (runtime/engine/native) against plain PyTorch arithmetic, for every ISA build this
machine can run, and the properties the engine relies on: rows independent of one another to the last bit, 16-bit
weights computed exactly as their fp32 values, one OpenMP runtime shared with torch, and a PyTorch fallback when
the library cannot be built."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from runtime.engine import native


@pytest.fixture(scope="module", params=native.supported_isas())
def kernels(request) -> native.NativeKernels:
    path = native.build(request.param)
    return native.NativeKernels(ctypes.CDLL(str(path)), path)


def test_norms_and_gating_match_torch(kernels):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 384, generator=gen)
    delta = torch.randn(12, 384, generator=gen)
    w = torch.randn(384, generator=gen)
    out = kernels.rms_norm(x, w, 1e-5, torch.empty_like(x))
    torch.testing.assert_close(out, F.rms_norm(x, (384,), w, 1e-5), rtol=1e-5, atol=1e-5)

    summed = x + delta
    x_inplace = x.clone()
    out = kernels.add_rms_norm(x_inplace, delta, w, 1e-5, torch.empty_like(x))
    assert torch.equal(x_inplace, summed)
    torch.testing.assert_close(out, F.rms_norm(summed, (384,), w, 1e-5), rtol=1e-5, atol=1e-5)

    gu = torch.randn(12, 2 * 1024, generator=gen) * 8  # wide range: the exp approximation's clamps get used
    act = kernels.silu_mul(gu, torch.empty(12, 1024), threads=2)
    torch.testing.assert_close(act, F.silu(gu[:, :1024]) * gu[:, 1024:], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [20, 32, 400], ids=["decode-rows-6+6+4+4", "decode-rows", "prefill-rows"])
@pytest.mark.parametrize("out", [640, 48], ids=["even-panels", "odd-panels"])
def test_linear_matches_torch_and_rows_are_independent(kernels, bias, rows, out):
    """400 rows of 1,024 inputs span several row blocks (the kernel blocks rows for L2): a row's result must not
    depend on which block, thread or batch it was computed in. 48 outputs are three panels: the AVX-512 tiles take
    panels in pairs, and the odd one goes alone."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(out, 1024, generator=gen)
    b = torch.randn(out, generator=gen) if bias else None
    packed = kernels.pack_weight(w)
    x = torch.randn(rows, 1024, generator=gen)
    y = kernels.linear(x, packed, b, out, threads=2)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-4, atol=1e-3)
    for start in (0, 12, rows - 4):
        for threads in (1, 2):
            alone = kernels.linear(x[start:start + 4].contiguous(), packed, b, out, threads=threads)
            assert torch.equal(alone, y[start:start + 4])
    assert kernels.pack_weight(torch.randn(40, 384)) is None  # not a multiple of the 16-column panel


HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_16bit_weights_widen_exactly(kernels, dtype):
    """Every one of the 65,536 bit patterns (zeros, subnormals, infinities, NaNs) widens to the fp32 value torch
    gives it: F16C in the AVX builds, integer arithmetic in the portable one for fp16, a shift for bf16."""
    w = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)[:, None]  # (65536, 1)
    y = kernels.linear(torch.ones(4, 1), kernels.pack_weight(w), None, w.shape[0], threads=2)
    for row in y:
        torch.testing.assert_close(row, w[:, 0].float(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("rows", [20, 400], ids=["decode-rows", "prefill-rows"])
def test_16bit_weights_give_the_bits_of_their_fp32_values(kernels, dtype, rows):
    """A product over 16-bit weights is the product over the same weights in fp32, bit for bit (widening is exact
    and the FMA chains are the same), rows independent of one another. 48 outputs: a pair of panels and a lone
    one for the AVX-512 tiles; 20 rows: 6+6+4+4 in the AVX2 tiles, 12+8 in AVX-512's; 400: several row blocks."""
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(48, 1024, generator=gen).to(dtype)
    b = torch.randn(48, generator=gen)
    x = torch.randn(rows, 1024, generator=gen)
    packed = kernels.pack_weight(w)
    assert packed.dtype == dtype and packed.numel() == w.numel()  # held in 16 bits
    y = kernels.linear(x, packed, b, 48, threads=2)
    assert torch.equal(y, kernels.linear(x, kernels.pack_weight(w.float()), b, 48, threads=2))
    torch.testing.assert_close(y, F.linear(x, w.float(), b), rtol=1e-4, atol=1e-3)
    for start in (0, rows - 4):
        assert torch.equal(kernels.linear(x[start:start + 4].contiguous(), packed, b, 48, threads=1),
                           y[start:start + 4])


def test_fma_builds_compute_the_same_bits():
    """The AVX2 and AVX-512 products differ in tiling only: every output element is the same FMA chain over k, so
    a model gives the same tokens on either kind of machine, over fp32, bf16 or fp16 weights. (The portable build
    has no FMA: it rounds twice.)"""
    builds = [i for i in native.supported_isas() if i != "generic"]
    if len(builds) < 2:
        pytest.skip(f"this CPU runs one FMA build only ({builds}); the AVX-512 build is compiled by "
                    "test_build_command_rejects_bad_input_with_a_message")
    gen = torch.Generator().manual_seed(5)
    w, b = torch.randn(2048, 384, generator=gen), torch.randn(2048, generator=gen)
    x = torch.randn(120, 384, generator=gen)
    for dtype in (torch.float32, *HALF):
        outputs = []
        for isa in builds:
            path = native.build(isa)
            kernels = native.NativeKernels(ctypes.CDLL(str(path)), path)
            outputs.append(kernels.linear(x, kernels.pack_weight(w.to(dtype)), b, 2048, threads=2))
        assert all(torch.equal(outputs[0], o) for o in outputs[1:]), dtype


def test_isa_override_narrows_or_is_refused(monkeypatch):
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_ISA", "generic")
    assert native.host_isa() == "generic"
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_ISA", "avx1024")
    with pytest.raises(native.NativeBuildError, match="ENDPOINTCTL_NATIVE_ISA=avx1024 is not one this CPU runs"):
        native.host_isa()


def _reference_attention(qkv, positions, slots, cos, ssin, k_cache, v_cache, nh, scale):
    """Step by step what the kernel fuses: RoPE on q/k, cache writes, then softmax attention over 0..pos."""
    nkv, hd = k_cache.shape[1], k_cache.shape[3]

    def rope(v, p):
        return v * cos[p] + v.roll(hd // 2, dims=-1) * ssin[p]

    for r, (p, s) in enumerate(zip(positions, slots, strict=True)):
        heads = qkv[r].view(nh + 2 * nkv, hd)
        k_cache[s, :, p] = rope(heads[nh:nh + nkv], p)
        v_cache[s, :, p] = heads[nh + nkv:]
    out = torch.zeros(qkv.shape[0], nh * hd)
    for r, (p, s) in enumerate(zip(positions, slots, strict=True)):
        q = rope(qkv[r].view(nh + 2 * nkv, hd)[:nh], p)
        keys = k_cache[s, :, : p + 1].repeat_interleave(nh // nkv, 0)
        values = v_cache[s, :, : p + 1].repeat_interleave(nh // nkv, 0)
        probs = torch.softmax((q[:, None] @ keys.transpose(-1, -2))[:, 0] * scale, dim=-1)
        out[r] = (probs[:, None] @ values)[:, 0].reshape(-1)
    return out


@pytest.mark.parametrize("hd", [64, 96, 128])
def test_decode_attention_matches_step_by_step_reference(kernels, hd):
    gen = torch.Generator().manual_seed(3)
    nh, nkv, capacity = 6, 2, 192
    angles = torch.arange(capacity)[:, None] * (1e-2 * torch.arange(1, hd // 2 + 1))[None]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).contiguous()
    ssin = torch.cat([-angles.sin(), angles.sin()], dim=-1).contiguous()
    k_cache = torch.randn(8, nkv, capacity, hd, generator=gen)
    v_cache = torch.randn(8, nkv, capacity, hd, generator=gen)
    # Rows 0-2 share slot 1 at consecutive positions (speculative verification: each sees the keys of the rows
    # before it), rows 3-5 are lone sequences of different lengths (one not a multiple of 8), rows 6-7 padding.
    positions, slots = [40, 41, 42, 0, 130, 9], [1, 1, 1, 3, 5, 0]
    qkv = torch.randn(8, (nh + 2 * nkv) * hd, generator=gen)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    expected = _reference_attention(qkv[:6], positions, slots, cos, ssin, ref_k, ref_v, nh, hd**-0.5)
    out = torch.full((8, nh * hd), float("nan"))
    kernels.attention(qkv, 6, torch.tensor(positions, dtype=torch.int32),
                             torch.tensor(slots, dtype=torch.int32), cos, ssin, k_cache, v_cache, nh, hd**-0.5, out,
                             threads=2)
    torch.testing.assert_close(k_cache, ref_k, rtol=1e-5, atol=1e-5)
    assert torch.equal(v_cache, ref_v)
    torch.testing.assert_close(out[:6], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(out[6:], torch.zeros(2, nh * hd))


def test_library_shares_torchs_openmp_runtime():
    """Two OpenMP runtimes in one process would each keep a thread pool on the same two cores. Checked in a fresh
    interpreter: other libraries the suite imports (scikit-learn) bring their own, which is not ours to judge."""
    script = (
        "import re, torch\n"
        "from runtime.engine import native\n"
        "native.load()\n"
        "print('\\n'.join(sorted(set(re.findall(r'(/\\S*libgomp[^/\\s]*)$', open('/proc/self/maps').read(), re.M)))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    loaded = done.stdout.split()
    assert len(loaded) == 1 and loaded[0].startswith(os.path.dirname(torch.__file__)), loaded


def test_builds_are_shareable_and_failures_typed(tmp_path, monkeypatch):
    """The image builds as root and runs as another user: the library must be readable by all. A cache directory
    that cannot be created is a NativeBuildError (the runner falls back), not an OSError that fails the load."""
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_DIR", str(tmp_path / "cache"))
    path = native.build("generic")
    assert path.stat().st_mode & 0o444 == 0o444
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_DIR", str(blocker / "cache"))
    with pytest.raises(native.NativeBuildError, match="cannot build"):
        native.build("generic")


def test_build_command_rejects_bad_input_with_a_message(tmp_path):
    """``python -m runtime.engine.native``: an unknown flag is a usage error, a failed build one line, no traceback."""
    cmd = [sys.executable, "-m", "runtime.engine.native"]
    bad = subprocess.run([*cmd, "--bogus"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr
    env = {**os.environ, "ENDPOINTCTL_NATIVE_DIR": str(tmp_path / "cache"), "CC": str(tmp_path / "no-cc")}
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert failed.returncode == 1 and "cannot build" in failed.stderr and "Traceback" not in failed.stderr
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env={**env, "ENDPOINTCTL_NATIVE_ISA": "avx1024"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "ENDPOINTCTL_NATIVE_ISA=avx1024 is not one this CPU runs" in refused.stderr
    env["CC"] = "cc"
    built = subprocess.run([*cmd, "--all"], capture_output=True, text=True, timeout=300, env=env, check=True)
    assert sorted(p.rsplit("-", 1)[1] for p in built.stdout.split()) == ["avx2.so", "avx512.so", "generic.so"]


def test_runner_falls_back_to_torch_ops_without_a_compiler(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from transformers import AutoModelForCausalLM

    from runtime.engine.model import LeanDecoderRunner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.NativeBuildError):
        native.load()
    runner = LeanDecoderRunner(model, max_slots=4, max_total_tokens=256)
    assert runner.kernels is None
    assert "native kernels unavailable" in caplog.text
    monkeypatch.setenv("ENDPOINTCTL_NATIVE_KERNELS", "0")
    monkeypatch.delenv("CC")
    monkeypatch.delenv("ENDPOINTCTL_NATIVE_DIR")
    assert LeanDecoderRunner(model, max_slots=4, max_total_tokens=256).kernels is None


@pytest.mark.parametrize("dtype", [torch.float32, *HALF], ids=["fp32", "bf16", "fp16"])
def test_forward_is_the_kernels_composed(kernels, dtype):
    """ek_forward (the whole stack in one call and one parallel region, GIL released) gives the bits of calling
    each kernel in turn, with any number of threads, over weights of each type."""
    gen = torch.Generator().manual_seed(4)
    nh, nkv, hd, hidden, ffn, capacity, n_layers = 4, 2, 32, 128, 192, 64, 2
    width = (nh + 2 * nkv) * hd

    def w(*shape):
        return torch.randn(*shape, generator=gen) * 0.1

    layers = [
        {"ln1": w(hidden) + 1, "ln2": w(hidden) + 1, "qkv": w(width, hidden), "qkv_bias": w(width),
         "o": w(hidden, nh * hd), "o_bias": None, "gate_up": w(2 * ffn, hidden), "down": w(hidden, ffn)}
        for _ in range(n_layers)
    ]
    final = w(hidden) + 1
    angles = torch.arange(capacity)[:, None] * (1e-2 * torch.arange(1, hd // 2 + 1))[None]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).contiguous()
    ssin = torch.cat([-angles.sin(), angles.sin()], dim=-1).contiguous()
    caches = [(torch.randn(4, nkv, capacity, hd, generator=gen), torch.randn(4, nkv, capacity, hd, generator=gen))
              for _ in range(n_layers)]
    positions = torch.tensor([5, 6, 17, 30, 2], dtype=torch.int32)
    slots = torch.tensor([0, 0, 1, 2, 3], dtype=torch.int32)
    x = torch.randn(8, hidden, generator=gen)  # 5 real rows, 3 padding

    packed = [{k: kernels.pack_weight(v.to(dtype)) if k in native.PROJECTIONS else v for k, v in layer.items()}
              for layer in layers]
    one_by_one = [(k.clone(), v.clone()) for k, v in caches]
    xs = x.clone()
    h = kernels.rms_norm(xs, layers[0]["ln1"], 1e-5, torch.empty_like(xs), 2)
    attn, act = torch.empty(8, nh * hd), torch.empty(8, ffn)
    for i, layer in enumerate(packed):
        qkv = kernels.linear(h, layer["qkv"], layer["qkv_bias"], width, 2)
        kernels.attention(qkv, 5, positions, slots, cos, ssin, *one_by_one[i], nh, hd**-0.5, attn, 2)
        kernels.add_rms_norm(xs, kernels.linear(attn, layer["o"], None, hidden, 2), layer["ln2"], 1e-5, h, 2)
        kernels.silu_mul(kernels.linear(h, layer["gate_up"], None, 2 * ffn, 2), act, 2)
        following = packed[i + 1]["ln1"] if i + 1 < n_layers else final
        kernels.add_rms_norm(xs, kernels.linear(act, layer["down"], None, hidden, 2), following, 1e-5, h, 2)

    for threads in (1, 2, 3):  # one region for the whole forward, phases separated by its own spin barrier
        fresh = [(k.clone(), v.clone()) for k, v in caches]
        table = native.layer_table([{**layer, "k_cache": k, "v_cache": v} for layer, (k, v) in zip(packed, fresh)])
        xf = x.clone()
        out = kernels.forward(table, final, xf, 5, positions, slots, cos, ssin, capacity, nh, nkv, hd, ffn, 1e-5,
                              hd**-0.5, threads)
        assert torch.equal(out, h), threads
        assert torch.equal(xf, xs)
        for (k1, v1), (k2, v2) in zip(one_by_one, fresh, strict=True):
            assert torch.equal(k1, k2) and torch.equal(v1, v2)
    with pytest.raises(ValueError, match="contiguous CPU tensors of torch.float32"):
        native.layer_table([{**packed[0], "k_cache": caches[0][0][:, :1], "v_cache": caches[0][1]}])
    mixed = {**packed[0], "o": kernels.pack_weight(layers[0]["o"].to(torch.float16 if dtype != torch.float16
                                                                        else torch.bfloat16))}
    with pytest.raises(ValueError, match="projections must share one of"):
        native.layer_table([{**mixed, "k_cache": caches[0][0], "v_cache": caches[0][1]}])
