"""`endpointctl catalog`, `catalog deploy` and `recommend` as subprocesses against a live control plane (the
local provider: directories are read there)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli, ControlPlane
from tests.cli.test_live import one_line_error
from tests.cli.test_startup import HEAVY, loaded, modules_after

SMOLLM2_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                  "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
                  "tie_word_embeddings": True, "torch_dtype": "float32"}


def test_catalog_lists_one_row_per_recipe_fitted_to_columns(cli: Cli) -> None:
    r = cli("catalog", env={"COLUMNS": "200"})
    assert r.code == 0, r
    header, *rows = r.stdout.splitlines()
    assert header.split()[:4] == ["MODEL", "RECIPE", "ENGINE", "ACCEL"] and "INSTANCE" in header
    assert any("smollm2-135m-instruct-local-cpu" in row and "local/local cpu-x2" in row for row in rows), r
    narrow = cli("catalog", env={"COLUMNS": "70"})
    assert narrow.code == 0 and all(len(line) <= 70 for line in narrow.stdout.splitlines()), narrow
    assert "INSTANCE" not in narrow.stdout.splitlines()[0]  # optional columns go first

    tei = cli("catalog", "--engine", "tei", "--accelerator", "gpu")
    assert [line.split()[1] for line in tei.stdout.splitlines()[1:]] == ["bge-small-en-v1-5-tei-t4"], tei
    data = json.loads(cli("catalog", "--search", "qwen", "--limit", "1", "-o", "json").stdout)
    assert [m["repoId"] for m in data["items"]] == ["Qwen/Qwen2.5-7B-Instruct"]
    assert data["items"][0]["recipes"][0]["engineType"] == "vllm"
    empty = cli("catalog", "--task", "no-such-task")
    assert empty.code == 0 and empty.stdout == "" and "no catalog model matches" in empty.stderr
    bad = cli("catalog", "--limit", "0")
    assert bad.code == 2 and "Traceback" not in bad.stderr


def test_catalog_deploy_by_recipe_and_by_repository(cli: Cli, controlplane: ControlPlane) -> None:
    r = cli("catalog", "deploy", "mistral-7b-instruct-v0-3-tgi-l4", "--name", "cat-mistral")
    assert r.code == 0, r
    assert r.stdout.startswith("endpoint admin/cat-mistral created (state: pending)"), r
    ep = json.loads(cli("describe", "cat-mistral", "-o", "json").stdout)
    assert ep["model"]["repository"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert ep["model"]["image"] == {"tgi": {"maxInputLength": 8192, "maxTotalTokens": 16384}}
    assert ep["compute"]["instanceType"] == "nvidia-l4"

    by_repo = json.loads(cli("catalog", "deploy", "BAAI/bge-small-en-v1.5", "--accelerator", "cpu", "-o",
                             "json").stdout)
    assert by_repo["name"].startswith("bge-small-en-v1-5-") and by_repo["model"]["image"] == {"tei": {"pooling": "cls"}}

    msg = one_line_error(cli("catalog", "deploy", "nobody/nothing"))
    assert "not in the catalog" in msg
    msg = one_line_error(cli("catalog", "deploy", "no-such-recipe"))
    assert "not found in the catalog" in msg
    msg = one_line_error(cli("catalog", "deploy", "../../etc"), code=2)  # refused before any request
    assert "invalid name" in msg


def test_recommend_prints_the_arithmetic_and_the_create_line(cli: Cli, tmp_path: Path) -> None:
    model = tmp_path / "home" / "smollm2"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    r = cli("recommend", "smollm2", "--context", "1024", "--concurrency", "2")  # relative to the CLI's directory
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert lines[1] == "parameters: 134,515,008 ≈ 0.135 B"
    assert "KV cache per token: 2 × 30 layers × 3 KV heads × 64 head_dim × 4 B = 46,080 B" in lines
    assert "KV cache: 46,080 B × 1,024 tokens × 2 concurrent = 0.09 GiB" in lines
    # 0.50 + 0.09 GiB, + 10% + 1 GiB = 1.65 GiB: 90% of cpu x1's 2 GiB holds it.
    assert lines[-1].startswith("smallest instance: local/local cpu x1 (local-local-cpu-x1)"), r
    assert f"--repository {model} --vendor local --region local --instance-type cpu --instance-size x1" in r.stderr

    answer = json.loads(cli("recommend", str(model), "-o", "json").stdout)
    # The model's 8,192 tokens: 0.50 + 0.35 GiB, + 10% + 1 GiB = 1.94 GiB > 1.8: cpu x2.
    assert answer["context"] == 8192 and answer["instance"]["id"] == "local-local-cpu-x2"
    msg = one_line_error(cli("recommend", str(tmp_path / "nowhere")))
    assert msg.startswith(f"no config.json in {tmp_path / 'nowhere'}"), msg
    msg = one_line_error(cli("recommend", "../../etc"))
    assert "Hub repository id" in msg


def test_help_imports_nothing_heavy() -> None:
    for args in (("catalog", "--help"), ("catalog", "deploy", "--help"), ("recommend", "--help")):
        assert loaded(modules_after(*args), HEAVY) == [], args


def test_create_recommend_fills_the_hardware(cli: Cli, tmp_path: Path) -> None:
    model = tmp_path / "home" / "smol"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    r = cli("create", "rec-smol", "--repository", str(model), "--recommend", "--context", "1024", "-o", "json")
    assert r.code == 0, r
    ep = json.loads(r.stdout)
    assert ep["compute"]["id"] == "local-local-cpu-x1" and ep["provider"] == {"vendor": "local", "region": "local"}
    assert "smallest instance: local/local cpu x1" in r.stderr
    wide = json.loads(cli("create", "rec-smol-long", "--repository", str(model), "--recommend", "--concurrency",
                          "8", "-o", "json").stdout)
    assert wide["compute"]["id"] == "local-local-cpu-x4"  # 0.50 + 8 × 0.35 GiB, + 10% + 1 GiB ≈ 4.6 GiB: over x2's 3.6
    msg = one_line_error(cli("create", "rec-x", "--repository", str(model), "--recommend", "--instance-size", "x1"),
                         code=2)
    assert "--recommend picks the instance" in msg
