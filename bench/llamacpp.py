"""llama.cpp's own server as a peer in the benchmark: ``llama-server`` built from source, and the benchmark's snapshot
converted to GGUF by that same tree's converter. Opt-in (``bench/runtime_throughput.py --workload chat
--llama-cpp``), never part of a test run.

Where the source comes from: the ``llama-cpp-python`` sdist on PyPI vendors a complete llama.cpp (its wheel holds
only the shared libraries: built as a subproject llama.cpp skips its tools, so the server has to be built here).
Each step is cached under ``~/.cache/endpointctl/llamacpp/<version>/`` (``ENDPOINTCTL_LLAMACPP_CACHE`` overrides
the parent) and skipped when its result is there, so a second run costs nothing; results are written to a
temporary name and renamed, so an interrupted step leaves nothing that looks finished.

1. ``sdist``: ``pip download llama-cpp-python==VERSION --no-deps --no-binary :all:`` with this interpreter's pip
   (the user's index, proxy and certificates apply), checked against the pinned sha256.
2. ``src/``: the sdist's ``vendor/llama.cpp``.
3. ``bin/llama-server``: cmake (Ninja when there is one), Release, static, the target ``llama-server`` only, 2 jobs
   (``CMAKE_BUILD_PARALLEL_LEVEL`` overrides); OpenSSL off, no web UI (neither the npm build nor the prebuilt
   download the build would otherwise try); no CURL either (this llama.cpp has dropped it: ``LLAMA_CURL`` is only
   a deprecation warning); ``GGML_NATIVE`` as llama.cpp defaults it (this CPU's instructions).
   ``build.json`` beside it keeps how long the build took.
4. ``python/``: the converter's one dependency the project does not install, ``sentencepiece`` (pinned in
   ``constraints.txt``; ``convert_hf_to_gguf.py`` imports it before it looks for a ``tokenizer.model``, even for a
   BPE vocabulary like SmolLM2's), installed with ``pip --target`` here and put on the converter's path only; the
   converter's other needs (torch, transformers, numpy) are the project's own, and its ``gguf`` is the tree's
   ``gguf-py``, as the script itself prefers.
5. ``gguf/<snapshot>-<f32|f16>.gguf``: ``convert_hf_to_gguf.py SNAPSHOT --outtype f32|f16``.

Run as a script it does all of that for a snapshot and prints the paths as JSON:
``python bench/llamacpp.py [MODEL_DIR]`` (default: the cached SmolLM2-135M-Instruct snapshot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
REPO = Path(__file__).resolve().parents[1]
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary in bin/, the build tree can go
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",  # no npm, no download: the server runs without its UI
]


class LlamaCppError(Exception):
    """A step failed; the message says which and why in one line (the tool's output tail follows it)."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cache_dir(root: str | Path | None = None) -> Path:
    parent = Path(root or os.environ.get("ENDPOINTCTL_LLAMACPP_CACHE") or Path.home() / ".cache/endpointctl/llamacpp")
    return parent / VERSION


def _run(cmd: list[str], *, what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise LlamaCppError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd[:4]))} ...\n{tail}")
    return proc.stdout


def fetch_sdist(root: Path, progress: Callable[[str], None] = _stderr) -> Path:
    from runtime.realmodels import _pip_error, sha256_of

    target = root / SDIST
    if target.exists() and sha256_of(target) == SDIST_SHA256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        progress(f"fetching llama-cpp-python=={VERSION} (sdist) with pip")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={VERSION}", "--no-deps",
                               "--no-binary", ":all:", "--disable-pip-version-check", "--no-input",
                               "--progress-bar", "off", "-d", tmp],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        got = Path(tmp) / SDIST
        if proc.returncode != 0 or not got.exists():
            raise LlamaCppError(f"cannot fetch llama-cpp-python=={VERSION}: {_pip_error(proc.stdout + proc.stderr)}")
        digest = sha256_of(got)
        if digest != SDIST_SHA256:
            raise LlamaCppError(f"{SDIST} from pip has sha256 {digest}, not the pinned {SDIST_SHA256}")
        os.replace(got, target)
    return target


def source_tree(root: Path, progress: Callable[[str], None] = _stderr) -> Path:
    """The sdist's vendored llama.cpp, extracted once."""
    src = root / "src"
    if (src / "CMakeLists.txt").exists() and (src / "convert_hf_to_gguf.py").exists():
        return src
    sdist = fetch_sdist(root, progress)
    progress(f"extracting vendor/llama.cpp from {sdist.name}")
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=root))
    try:
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                if member.name.startswith(prefix) and len(member.name) > len(prefix):
                    member.name = member.name[len(prefix):]
                    members.append(member)
            archive.extractall(tmp, members=members, filter="data")
        if src.exists():
            shutil.rmtree(src)
        os.rename(tmp, src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return src


def build_info(root: str | Path | None = None) -> dict:
    """What the cached build recorded (commit, seconds it took), or {} before the first build."""
    try:
        return json.loads((cache_dir(root) / "build.json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_server(root: str | Path | None = None, progress: Callable[[str], None] = _stderr) -> Path:
    """``bin/llama-server``, built once."""
    root = cache_dir(root)
    binary = root / "bin" / "llama-server"
    if binary.exists() and os.access(binary, os.X_OK):
        return binary
    src = source_tree(root, progress)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise LlamaCppError(f"building llama-server needs {tool} on PATH (apt-get install cmake g++)")
    build = root / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    progress(f"building llama-server from llama.cpp in {src} ({'ninja' if generator else 'make'}, {jobs} jobs); "
             f"minutes on 2 cores")
    started = time.monotonic()
    shutil.rmtree(build, ignore_errors=True)  # a half-finished tree from an interrupted run (e.g. another generator)
    _run(["cmake", "-S", str(src), "-B", str(build), *generator, *CMAKE_OPTIONS], what="cmake configure")
    _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], what="cmake build")
    seconds = round(time.monotonic() - started, 1)
    built = build / "bin" / "llama-server"
    version = _run([str(built), "--version"], what="llama-server --version").strip().splitlines()
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(".llama-server.tmp")
    shutil.copy2(built, tmp)
    info = {"llama_cpp_python": VERSION, "version": version[-2:] if len(version) > 1 else version,
            "build_s": seconds, "generator": "ninja" if generator else "make", "jobs": int(jobs),
            "cmake_options": CMAKE_OPTIONS}
    (root / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, binary)
    shutil.rmtree(build, ignore_errors=True)
    progress(f"llama-server built in {seconds} s: {binary}")
    return binary


def _pinned(package: str) -> str:
    """``package==version`` as constraints.txt pins it."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == package:
            return line.strip()
    raise LlamaCppError(f"{package} is not pinned in constraints.txt")


def converter_path(root: Path, progress: Callable[[str], None] = _stderr) -> Path:
    """A directory holding the converter's extra dependency (sentencepiece), installed once with pip --target."""
    target = root / "python"
    if (target / "sentencepiece").is_dir():
        return target
    requirement = _pinned("sentencepiece")
    progress(f"installing {requirement} for the converter into {target}")
    tmp = Path(tempfile.mkdtemp(prefix=".python-", dir=root))
    try:
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-deps",
              "--only-binary", ":all:", "--target", str(tmp), "-c", str(REPO / "constraints.txt"), requirement],
             what=f"pip install {requirement}")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_gguf(model_dir: str | Path, outtype: str, root: str | Path | None = None,
                progress: Callable[[str], None] = _stderr) -> Path:
    """The snapshot at ``model_dir`` as a GGUF file of ``outtype`` (f32, f16, bf16, q8_0), converted once by the
    tree's ``convert_hf_to_gguf.py``."""
    root = cache_dir(root)
    model_dir = Path(model_dir)
    out = root / "gguf" / f"{model_dir.name}-{outtype}.gguf"
    if out.exists():
        return out
    src = source_tree(root, progress)
    extra = converter_path(root, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    progress(f"converting {model_dir} to {outtype} with llama.cpp's convert_hf_to_gguf.py")
    started = time.monotonic()
    try:
        _run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", outtype,
              "--outfile", str(tmp)], what=f"convert_hf_to_gguf.py --outtype {outtype}",
             env={"PYTHONPATH": os.pathsep.join([str(extra), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    progress(f"{out.name} written in {time.monotonic() - started:.1f} s")
    return out


def main() -> None:
    sys.path.insert(0, str(REPO))
    if len(sys.argv) > 1:
        model_dir = Path(sys.argv[1])
    else:
        from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_model

        model_dir = cached_model(SMOLLM2_135M_INSTRUCT.name)
    try:
        server = ensure_server()
        files = {t: str(ensure_gguf(model_dir, t)) for t in ("f32", "f16")}
    except LlamaCppError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps({"server": str(server), **build_info(), "gguf": files}, indent=2))


if __name__ == "__main__":
    main()
