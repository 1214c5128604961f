"""Which environment variable names a tenant may never set: the ones that change how an interpreter, a loader or
a library finds and runs code, or where it reads and writes files.

Why a list of names rather than of values: these variables turn *any* value into code execution or file access
(`LD_PRELOAD`, `PYTHONSTARTUP`, `BROWSER` through `PYTHONWARNINGS`, `BASH_ENV`, `GCONV_PATH`...), and a replica
process is started by our own code on the host. The API refuses them with a 422 naming the variable
(`controlplane.services.validation`), on every provider; the reconciler also drops them when it builds a
deployment (`worker/reconcile.py`), so a row written before this policy existed cannot use them either.

Kept in the control plane (not the worker) because both sides need it and dependencies run one way.
"""

from __future__ import annotations

# Whole families: dynamic loaders, interpreters' start-up hooks and search paths, locale/charset loaders.
PROTECTED_ENV_PREFIXES: tuple[str, ...] = (
    "LD_",        # glibc's dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, LD_DEBUG_OUTPUT ...
    "DYLD_",      # macOS's loader
    "PYTHON",     # PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, PYTHONWARNINGS, PYTHONINSPECT, PYTHONBREAKPOINT ...
    "PERL5",      # PERL5OPT, PERL5LIB, PERL5DB
    "PERLLIB",
    "RUBY",       # RUBYOPT, RUBYLIB
    "NODE_",      # NODE_OPTIONS (--require), NODE_PATH
    "JAVA_TOOL_", # JAVA_TOOL_OPTIONS (-javaagent)
    "_JAVA_",
    "GLIBC_",     # GLIBC_TUNABLES
    "MALLOC_",
    "GCONV_",
    "GIO_",
    "GTK_",
    "SSL_CERT_",  # which CAs the replica trusts when it downloads a model
    "ENDPOINTCTL_",  # our own processes' settings (admin token, database, data dir ...)
    "KUBERNETES_",   # in-cluster service discovery the pod is given by the kubelet
    "CELERY_",
)

# Single names.
PROTECTED_ENV_NAMES: frozenset[str] = frozenset({
    "PATH", "HOME", "SHELL", "USER", "LOGNAME", "TMPDIR", "TEMP", "TMP", "IFS", "CDPATH",
    "BASH_ENV", "ENV", "PS4", "PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS",
    "BROWSER", "EDITOR", "VISUAL", "PAGER", "MANPAGER", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH",
    "GIT_CONFIG", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_ASKPASS", "SSH_ASKPASS",
    "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN", "TZDIR",
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE",
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
    # Cache and library locations: a tenant must not point a replica's caches or plug-ins at host paths.
    "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "CUDA_CACHE_PATH", "XDG_STATE_HOME", "NUMBA_CACHE_DIR",
    "TORCH_CUDA_ARCH_LIST", "CC", "CXX", "CFLAGS", "LDFLAGS", "CPATH", "LIBRARY_PATH", "PKG_CONFIG_PATH",
    "TRANSFORMERS_TRUST_REMOTE_CODE", "HF_TRUST_REMOTE_CODE",
    "OMP_TOOL_LIBRARIES", "KMP_TOOL_LIBRARIES", "CUDA_INJECTION64_PATH", "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
})


def refused_env_name(name: str) -> str | None:
    """Why a tenant may not set `name` (None when it may). Case-insensitive: some loaders and shells are."""
    upper = name.upper()
    if upper in PROTECTED_ENV_NAMES:
        return (f"{name} changes how the replica's interpreter, loader or libraries find code or files, "
                "so it is set by the platform only")
    for prefix in PROTECTED_ENV_PREFIXES:
        if upper.startswith(prefix):
            return (f"variables starting with {prefix} configure the replica's interpreter, loader or the "
                    "platform itself, so they are set by the platform only")
    return None
