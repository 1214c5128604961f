"""GGUF repositories (runtime/engine/gguf_files.py): which file is served, and the one-line refusals — in the
functions, and at the start of a real `python -m runtime` process.

GGUF files here are written with gguf-py's own writer (tests/fixtures/models.write_gguf); serving a real one is in
test_real_model.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import parse_settings
from runtime.engine.gguf_files import (
    GGUFError,
    check_gguf_file,
    choose_gguf,
    find_gguf,
    load_gguf_causal_lm,
    quant_of,
    read_gguf_header,
)
from tests.fixtures.models import REPO_ROOT, write_gguf
from tests.fixtures.processes import free_port


def test_file_names_announce_their_quantization() -> None:
    assert quant_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_of("llama-3.2-1b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert quant_of("Model-BF16.gguf") == "BF16"  # not F16
    assert quant_of("Model.IQ2_XXS.gguf") == "IQ2_XXS"
    assert quant_of("qwen2-0.5b-f32.gguf") == "F32"
    assert quant_of("model.gguf") is None


def test_the_best_quantization_present_is_chosen() -> None:
    files = ["README.md", "m-IQ2_XS.gguf", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q8_0.gguf", "m-Q5_K_M.gguf",
             "m-F16.gguf", "m-BF16.gguf", "m-F32.gguf", "m-Q6_K.gguf", "m-Q4_0.gguf"]
    order = []
    while any(f.endswith(".gguf") for f in files):
        chosen = choose_gguf(files).filename
        order.append(quant_of(chosen))
        files.remove(chosen)
    assert order == ["F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ2_XS"]
    assert choose_gguf(["only-file-no-quant-name.gguf", "config.yaml"]).filename == "only-file-no-quant-name.gguf"
    # A file whose name says its quantization beats one whose name says nothing.
    assert choose_gguf(["model.gguf", "model-Q2_K.gguf"]).filename == "model-Q2_K.gguf"
    choice = choose_gguf(["a-Q4_1.gguf", "a-Q8_0.gguf"])
    assert choice.filename == "a-Q8_0.gguf" and "Q8_0" in choice.reason


def test_a_tie_or_nothing_to_choose_is_a_one_line_error() -> None:
    tie = r"2 \.gguf files are equally good candidates \(a-Q8_0\.gguf, b-Q8_0\.gguf\): set GGUF_FILE"
    with pytest.raises(GGUFError, match=tie):
        choose_gguf(["a-Q8_0.gguf", "b-Q8_0.gguf", "c-Q4_0.gguf"])
    with pytest.raises(GGUFError, match="no .gguf file"):
        choose_gguf(["config.json"])


def test_split_files_offer_their_first_part_and_it_is_refused_by_name(tmp_path: Path) -> None:
    files = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q4_0.gguf"]
    assert choose_gguf(files).filename == "m-Q8_0-00001-of-00002.gguf"
    part = write_gguf(tmp_path / "m-Q8_0-00001-of-00002.gguf", {"token_embd.weight": "Q8_0"})
    with pytest.raises(GGUFError, match=r"one part of a split GGUF file.*--merge"):
        check_gguf_file(part)


def test_which_repositories_are_gguf_ones(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    write_gguf(snapshot / "extra-Q8_0.gguf", {"token_embd.weight": "Q8_0"})
    assert find_gguf(str(snapshot), gguf_file=None, revision=None, token=None) is None  # the snapshot wins
    choice = find_gguf(str(snapshot), gguf_file="extra-Q8_0.gguf", revision=None, token=None)
    assert choice is not None and choice.filename == "extra-Q8_0.gguf" and choice.reason == "GGUF_FILE"

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "README.md").write_text("# weights")
    write_gguf(repo / "sub" / "m-Q4_0.gguf", {"token_embd.weight": "Q4_0"})
    write_gguf(repo / "m-Q8_0.gguf", {"token_embd.weight": "Q8_0"})
    assert find_gguf(str(repo), gguf_file=None, revision=None, token=None).filename == "m-Q8_0.gguf"
    assert find_gguf(str(repo), gguf_file="sub/m-Q4_0.gguf", revision=None, token=None).filename == "sub/m-Q4_0.gguf"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("nothing to serve")
    assert find_gguf(str(plain), gguf_file=None, revision=None, token=None) is None  # the normal loader's error
    assert find_gguf(str(tmp_path / "missing"), gguf_file=None, revision=None, token=None) is None


@pytest.mark.parametrize("name", ["../m-Q8_0.gguf", "/etc/passwd", "sub/../../x.gguf", "missing.gguf"])
def test_gguf_file_must_name_a_file_inside_the_repository(tmp_path: Path, name: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_gguf(tmp_path / "m-Q8_0.gguf", {"token_embd.weight": "Q8_0"})  # exists, but outside the repository
    with pytest.raises(GGUFError, match="GGUF_FILE") as info:
        find_gguf(str(repo), gguf_file=name, revision=None, token=None)
    assert "\n" not in str(info.value)


def test_gguf_file_is_a_runtime_setting_like_tgis(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_settings(["--gguf-file", "m-Q8_0.gguf"]).gguf_file == "m-Q8_0.gguf"
    monkeypatch.setenv("GGUF_FILE", "from-env.gguf")
    assert parse_settings([]).gguf_file == "from-env.gguf"


def test_the_header_reader_sees_every_tensor_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "mixed.gguf", {"token_embd.weight": "F32", "blk.0.attn_q.weight": "Q4_1",
                                                "blk.0.ffn_up.weight": "Q6_K", "output_norm.weight": "F16"})
    header = check_gguf_file(path)
    assert header.version == 3 and header.architecture == "llama"
    assert header.tensor_types == {"token_embd.weight": "F32", "blk.0.attn_q.weight": "Q4_1",
                                   "blk.0.ffn_up.weight": "Q6_K", "output_norm.weight": "F16"}


def test_files_this_runtime_cannot_read_are_refused_in_one_line(tmp_path: Path) -> None:
    good = write_gguf(tmp_path / "good.gguf", {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_0"})
    cases = {
        "unsupported": (write_gguf(tmp_path / "m-Q1_0.gguf", {"token_embd.weight": "Q8_0",
                                                              "blk.0.attn_q.weight": "Q1_0",
                                                              "blk.0.attn_k.weight": "Q1_0"}),
                        r"m-Q1_0\.gguf holds tensors of a quantization type this runtime cannot dequantize: "
                        r"Q1_0 \(2 tensors, e\.g\. blk\.0\.attn_q\.weight\); pick another quantization"),
        "zip": (tmp_path / "zip.gguf", r"zip\.gguf is not a GGUF file \(it starts with b'PK\\x03\\x04', not b'GGUF'\)"),
        "empty": (tmp_path / "empty.gguf", r"empty\.gguf is not a GGUF file \(0 bytes\)"),
        "cut": (tmp_path / "cut.gguf", r"cut\.gguf is not a complete GGUF file \(its header is cut short"),
        "v1": (tmp_path / "v1.gguf", r"v1\.gguf is GGUF version 1; this runtime reads versions 2 and 3"),
    }
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "cut.gguf").write_bytes(good.read_bytes()[:60])
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + good.read_bytes()[8:])
    for case, (path, pattern) in cases.items():
        with pytest.raises(GGUFError, match=pattern) as info:
            check_gguf_file(path)
        assert "\n" not in str(info.value), case
    assert read_gguf_header(good).tensor_types == {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_0"}


def test_what_transformers_refuses_is_one_line_naming_the_file(tmp_path: Path) -> None:
    import torch

    write_gguf(tmp_path / "m-F32.gguf", {"token_embd.weight": "F32"}, architecture="nonesuch")
    with pytest.raises(GGUFError, match=r"^m-F32\.gguf: GGUF model with architecture nonesuch is not supported yet\.$"):
        load_gguf_causal_lm(str(tmp_path), "m-F32.gguf", revision=None, token=None, dtype=torch.float32)


@pytest.mark.slow
def test_the_runtime_exits_3_with_the_one_line_reason(tmp_path: Path) -> None:
    """What the local provider turns into the endpoint's `failed` message: the runtime's last log lines."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.gguf").write_bytes(b"<html>404 Not Found</html>" + bytes(100))
    log = tmp_path / "runtime.log"
    env = {**os.environ, "MODEL_ID": str(repo), "PORT": str(free_port()), "HOSTNAME": "127.0.0.1",
           "PYTHONPATH": str(REPO_ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runtime"], env=env, cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert code == 3, text
    assert "model load failed: model.gguf is not a GGUF file (it starts with b'<htm', not b'GGUF')" in text, text
    assert "Traceback" not in text, text
