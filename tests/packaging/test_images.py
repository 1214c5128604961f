"""The images and the README's set-up install extras, never hand lists, and the runtime image's CUDA is the wheels'.

No Docker engine runs here, so the Dockerfiles are parsed: what they copy, what they pip-install, and the base image
against the torch wheel constraints.txt pins.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILES = {"controlplane": ROOT / "docker" / "Dockerfile.controlplane", "runtime": ROOT / "docker" / "Dockerfile.runtime"}
IMAGE_EXTRAS = {"controlplane": {"server", "kubernetes"}, "runtime": {"runtime"}}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def _pip_installs(path: Path) -> list[list[str]]:
    """The arguments of every `pip install` the image runs."""
    installs = []
    for instruction, args in _instructions(path):
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"] and words[3:4] == ["install"]:
                installs.append(words[words.index("install") + 1:])
    return installs


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if sep:
            pins[name.strip().lower()] = pinned.strip()
    return pins


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_install_their_extras_with_the_constraints_and_nothing_else(image: str) -> None:
    installs = _pip_installs(DOCKERFILES[image])
    assert installs, f"{image}: no pip install found"
    for args in installs:
        targets = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in ("-c", "--constraint")]
        assert len(targets) == 1 and targets[0].startswith(".["), f"{image} installs a hand list: {args}"
        assert "-c" in args and args[args.index("-c") + 1] == "constraints.txt", f"{image} ignores constraints.txt"
        assert "--no-deps" not in args
        extras = set(targets[0].removeprefix(".[").removesuffix("]").split(","))
        assert extras == IMAGE_EXTRAS[image]
        assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_copy_every_package_the_wheel_is_built_from(image: str) -> None:
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {Path(shlex.split(args)[0]).parts[0] for instruction, args in _instructions(DOCKERFILES[image])
              if instruction == "COPY"}
    assert packages <= copied, f"{image} does not copy {sorted(packages - copied)}"


def test_runtime_base_image_has_the_cuda_of_the_pinned_torch_wheel() -> None:
    pins = _constraints()
    toolkit = pins["cuda-toolkit"]  # the wheel's CUDA toolkit, e.g. 13.0.3
    wheel_cuda = tuple(int(p) for p in toolkit.split(".")[:2])
    # The per-library wheels are built for the same major (`-cu13`), else the pins themselves disagree.
    for name in pins:
        suffix = re.search(r"-cu(\d+)$", name)
        assert suffix is None or int(suffix.group(1)) == wheel_cuda[0], f"{name} is not for CUDA {wheel_cuda[0]}"
    base_args = [args for instruction, args in _instructions(DOCKERFILES["runtime"])
                 if instruction == "ARG" and args.startswith("BASE=")]
    assert len(base_args) == 1
    match = re.fullmatch(r"BASE=nvidia/cuda:(\d+)\.(\d+)\.\d+-([a-z-]+)-ubuntu\d+\.\d+", base_args[0].strip())
    assert match, f"unexpected base image {base_args[0]}"
    assert (int(match.group(1)), int(match.group(2))) == wheel_cuda, (
        f"Dockerfile.runtime's base is CUDA {match.group(1)}.{match.group(2)}, the pinned torch wheel CUDA {toolkit}")
    # The wheels bring cuDNN and cuBLAS; a cudnn/devel base would only add a second copy.
    assert match.group(3) == "base"


def test_pinned_torch_is_the_build_for_that_cuda() -> None:
    """The torch in this venv is the one constraints.txt pins, and its metadata asks for the same CUDA toolkit."""
    from importlib.metadata import requires, version

    pins = _constraints()
    assert version("torch").split("+")[0] == pins["torch"]
    def release(text: str) -> tuple[int, ...]:
        numbers = [int(p) for p in text.split(".")]
        while numbers and numbers[-1] == 0:
            numbers.pop()  # 13.0.3 == 13.0.3.0
        return tuple(numbers)

    toolkit = [r for r in requires("torch") or [] if r.startswith("cuda-toolkit")]
    if toolkit:  # a CPU-only build has none; then there is nothing for the base image to agree with here
        wanted = re.search(r"==([\d.]+)", toolkit[0])
        assert wanted and release(wanted.group(1)) == release(pins["cuda-toolkit"])


def test_bootstrap_installs_every_part() -> None:
    """The README's commands (bootstrap.sh, and .ci/run through scripts/test.sh) keep installing everything."""
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    parts = set(PYPROJECT["project"]["optional-dependencies"]) - {"all", "test"}
    match = re.search(r'^extras="([^"]+)"; \[\[ \$WITH_TESTS == 1 \]\] && extras\+=",test"$', script, re.M)
    assert match and set(match.group(1).split(",")) == parts
    assert 'pip install -q -c constraints.txt -e ".[${extras}]"' in script
    (everything,) = PYPROJECT["project"]["optional-dependencies"]["all"]
    assert everything.startswith("endpointctl[") and set(everything[12:].rstrip("]").split(",")) == parts
