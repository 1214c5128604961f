"""The environments and interpreter flags of the processes the local provider starts: built, never inherited.

Why: the processes that start replicas (`endpointctl up`, the Celery worker) hold the admin token, the database and
broker URLs and the secrets key in their environment. A child started with a copy of it carries them in
`/proc/<pid>/environ` for its whole life (clearing `os.environ` later does not change that block), and a tenant's
`model.env` given to one of our interpreters configures it: `PYTHONWARNINGS` naming a module makes Python import it
at start-up, and `antigravity` then runs `BROWSER` as a command. So:

- supervisors and the forkserver start from `host_env()` alone: an allow-list of the host's settings that only
  shape where caches live, how models download, threads, devices and locale, with a `PATH` of our choosing;
- a replica gets `host_env()`, then the tenant's env and secrets, then the provider's own variables (port, host,
  model path, `PATH`), which nothing before them can override;
- every Python we start runs isolated (`-I`: `PYTHON*` variables, the user's site-packages and the working
  directory do not affect it) and unbuffered (`-u`, since `PYTHONUNBUFFERED` is ignored too), so even a tenant
  variable that reaches a replica cannot configure its interpreter.

Tenant names that change how a loader or library runs code (`LD_PRELOAD`, ...) are refused by the API and dropped by
the reconciler before a `DesiredDeployment` exists (`common/envpolicy.py`); the flags above hold without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# The host's settings a replica may need, none of them a credential of the control plane. Proxies and the hub token
# are the operator's means of downloading models for every endpoint (an endpoint's own HF_TOKEN secret wins).
HOST_ENV_NAMES: frozenset[str] = frozenset({
    "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES",
    # The bundled runtime's host-wide settings (model cache, native kernels): the operator's, not a tenant's.
    "ENDPOINTCTL_MODEL_CACHE", "ENDPOINTCTL_NATIVE_KERNELS", "ENDPOINTCTL_NATIVE_ISA", "ENDPOINTCTL_NATIVE_DIR",
})
HOST_ENV_PREFIXES: tuple[str, ...] = ("LC_",)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Isolated and unbuffered: see the module docstring.
PYTHON_FLAGS: tuple[str, ...] = ("-I", "-u")

# Files our processes create are the stack user's alone (databases, logs, replica state).
PRIVATE_UMASK = 0o077


def search_path(python: str | None = None) -> str:
    """The interpreter's own bin directory (console scripts of its environment), then the system's."""
    return f"{Path(python or sys.executable).parent}:{SYSTEM_PATH}"


def host_env(source: Mapping[str, str] | None = None, *, python: str | None = None) -> dict[str, str]:
    """The allow-listed part of `source` (default: this process's environment) plus our `PATH`."""
    source = os.environ if source is None else source
    env = {k: v for k, v in source.items() if k in HOST_ENV_NAMES or k.startswith(HOST_ENV_PREFIXES)}
    env["PATH"] = search_path(python)
    return env


def python_module_command(python: str, module: str) -> list[str]:
    """`python -I -u -m module`: how we start every Python process of ours."""
    return [python, *PYTHON_FLAGS, "-m", module]


def split_module_command(command: list[str]) -> tuple[str, list[str]] | None:
    """(module, argv) of `[python, *flags, "-m", module, *argv]`, or None for any other command (the forkserver can
    only run a module)."""
    if "-m" not in command[1:]:
        return None
    at = command.index("-m", 1)
    if at + 1 >= len(command) or any(not flag.startswith("-") for flag in command[1:at]):
        return None
    return command[at + 1], command[at + 2:]
