"""The model catalog file: the shipped default, an operator's replacement, and the clear error a bad one stops the
control plane with (at start-up, not at the first deploy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.catalog import load_catalog, parse_catalog
from common.config import Settings
from common.errors import CatalogError
from common.model_catalog import ENGINE_VARIANTS, CatalogFilter, load_model_catalog, parse_model_catalog

HARDWARE = load_catalog(None)

GOOD = """
models:
- repoId: acme/llm
  license: Apache 2.0
  task: text-generation
  createdAt: 2026-11-02T10:00:00Z
  recipes:
  - {id: acme-llm-tgi, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4,
     instanceSize: x1, image: {maxTotalTokens: 8192}}
"""


def _with(recipe: str, *, extra_model: str = "") -> str:
    return f"""
models:
- repoId: acme/llm
  license: Apache 2.0
  task: text-generation
  createdAt: 2026-11-02T10:00:00Z{extra_model}
  recipes:
  - {recipe}
"""


def test_the_shipped_default_serves_every_engine_on_instances_that_exist() -> None:
    catalog = load_model_catalog(None, HARDWARE)
    engines = {r.engine for m in catalog.models for r in m.recipes}
    assert engines == set(ENGINE_VARIANTS)
    smollm = catalog.model("huggingfacetb/smollm2-135m-instruct")
    assert smollm is not None and smollm.recipes[0].vendor == "local" and smollm.recipes[0].engine == "huggingface"
    assert [m.repoId for m, _ in catalog.list(CatalogFilter(engine="tei"))] == ["BAAI/bge-small-en-v1.5"]
    # Every shipped recipe fits the shipped hardware: checked strictly, nothing is dropped by the fitting.
    shipped = (Path(__file__).resolve().parents[2] / "common" / "data" / "models.yaml").read_text()
    assert parse_model_catalog(shipped, hardware=HARDWARE) == catalog


def test_the_shipped_default_keeps_what_fits_an_operators_hardware_catalog() -> None:
    """An operator who replaced the hardware catalog gets the default recipes their instances can run, not a
    start-up failure over instances they never had; an operator's own model catalog stays strict."""
    onprem = parse_catalog("""
vendors:
  - name: onprem
    regions:
      - name: rack-1
        computes:
          - {id: onprem-rack-1-nvidia-l40s-x4, accelerator: gpu, instanceType: nvidia-l40s, instanceSize: x4,
             numAccelerators: 4, memoryGb: 256, gpuMemoryGb: 192}
  - name: local
    regions:
      - name: local
        computes:
          - {id: local-local-cpu-x2, accelerator: cpu, instanceType: cpu, instanceSize: x2, numCpus: 2, memoryGb: 4}
""")
    catalog = load_model_catalog(None, onprem)
    recipes = [r for m in catalog.models for r in m.recipes]
    assert recipes and {r.vendor for r in recipes} == {"local"}
    assert [m.repoId for m in catalog.models] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    with pytest.raises(CatalogError, match="which the hardware catalog does not have"):
        parse_model_catalog(GOOD, hardware=onprem)


@pytest.mark.parametrize(("text", "needle"), [
    ("models: [", "invalid model catalog"),
    ("models: [{repoId: a/b}]", "Field required"),
    (_with("{id: r1, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1, colour: red}"), "Extra inputs are not permitted"),
    (_with("{id: r1, engine: trtllm, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1}"), "unknown engine 'trtllm'"),
    (_with("{id: r1, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1, image: {maxNumSeqs: 4}}"), "engine tgi takes no setting 'maxNumSeqs'"),
    (_with("{id: r1, engine: llamacpp, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1}"), "names its GGUF file"),
    (_with("{id: R_1, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1}"), "a recipe id is"),
    (_with("{id: r1, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x16}"), "which the hardware catalog does not have"),
    (_with("{id: r1, engine: tgi, accelerator: cpu, vendor: aws, region: us-east-1, instanceType: nvidia-l4, "
           "instanceSize: x1}"), "says accelerator 'cpu' but aws/us-east-1 nvidia-l4 x1 is 'gpu'"),
    (GOOD.replace("acme/llm", "../../etc"), "is not a Hub repository id"),
    (GOOD + GOOD.split("models:", 1)[1].replace("acme/llm", "acme/other"), "recipe id acme-llm-tgi is used by"),
])
def test_bad_files_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(CatalogError, match="invalid model catalog") as raised:
        parse_model_catalog(text, hardware=HARDWARE, source="/etc/endpointctl/models.yaml")
    assert needle in raised.value.message


def test_an_operator_file_replaces_the_default_and_a_bad_one_stops_the_start(tmp_path: Path) -> None:
    from controlplane.app import create_app

    path = tmp_path / "models.yaml"
    path.write_text(GOOD)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}", model_catalog=path)
    app = create_app(settings, enqueue=lambda _id: None)
    assert [m.repoId for m in app.state.model_catalog.models] == ["acme/llm"]

    # Parses, names real hardware, and still would be refused by a create: an env name no tenant may set.
    path.write_text(_with("{id: r1, engine: tgi, accelerator: gpu, vendor: aws, region: us-east-1, "
                          "instanceType: nvidia-l4, instanceSize: x1, env: {LD_PRELOAD: /tmp/x.so}}"))
    with pytest.raises(CatalogError, match="recipe r1 .* would be refused: .*LD_PRELOAD"):
        create_app(settings, enqueue=lambda _id: None)
    with pytest.raises(CatalogError, match="cannot read model catalog"):
        create_app(settings.model_copy(update={"model_catalog": tmp_path / "missing.yaml"}), enqueue=lambda _id: None)


def test_python_m_controlplane_says_why_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "models.yaml"
    path.write_text(GOOD.replace("nvidia-l4", "nvidia-l5"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENDPOINTCTL_")},
           "ENDPOINTCTL_DATA_DIR": str(tmp_path), "ENDPOINTCTL_MODEL_CATALOG": str(path)}
    proc = subprocess.run([sys.executable, "-m", "controlplane", "--no-migrate", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"invalid model catalog {path}: recipe acme-llm-tgi (acme/llm) names aws/us-east-1 nvidia-l5 x1" in proc.stderr
