"""Errors of the simulated cluster harness; the CLI turns them into a clear message and exit code 1."""

from __future__ import annotations


class DevClusterError(Exception):
    """Base of every harness error (bad state directory, failed start, missing binaries)."""


class BinariesMissing(DevClusterError):
    """The Go-built binaries are not in the cache and could not be built."""


class ClusterNotRunning(DevClusterError):
    """An operation needs a running cluster and there is none in the state directory."""


class StartAttemptFailed(DevClusterError):
    """One start-up attempt failed in a way a fresh attempt (new ports, clean data) may not repeat."""


class ComponentExited(StartAttemptFailed):
    """A cluster process died while starting (typically: its port was taken in the meantime)."""


class ComponentStalled(StartAttemptFailed):
    """A cluster process runs but did not become healthy within the attempt's budget."""
