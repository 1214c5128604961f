"""A failed replica's output becomes one line (the cause) in status messages and events."""

from __future__ import annotations

from common.failure import failure_cause, one_line

TRACEBACK_TAIL = [
    "[supervisor 15:00:40] started runtime pid 4190",
    "2026-12-04 15:00:40,800 ERROR runtime: model load failed (traceback follows)",
    "Traceback (most recent call last):",
    '  File "/work/main/runtime/app.py", line 140, in _load_in_background',
    "    loaded = load_model(state.settings)",
    "             ^^^^^^^^^^^^^^^^^^^^^^^^^^",
    "ValueError: Unrecognized model in /x. Should have a `model_type` key in its config.json.",
    "2026-12-04 15:00:40,869 ERROR runtime: model load failed: ValueError: Unrecognized model in /x.",
    "2026-12-04 15:00:40,869 ERROR runtime: exiting with code 3: the model could not be loaded",
    "[supervisor 15:00:41] runtime exited with code 3",
    "[supervisor 15:00:41] giving up after 3 consecutive failures",
]


def test_the_runtimes_summary_line_is_the_cause() -> None:
    assert failure_cause(TRACEBACK_TAIL) == "model load failed: ValueError: Unrecognized model in /x."


def test_without_a_summary_the_exception_line_is_the_cause() -> None:
    lines = [line for line in TRACEBACK_TAIL if "model load failed:" not in line]
    assert failure_cause(lines).startswith("ValueError: Unrecognized model in /x.")


def test_without_an_exception_the_last_line_that_says_something() -> None:
    assert failure_cause(["[supervisor 1] started", "OSError -- disk full!", "[supervisor 2] runtime exited with code 1"]
                         ) == "OSError -- disk full!"
    assert failure_cause([]) is None


def test_a_multi_line_message_becomes_its_first_line_and_the_cause() -> None:
    message = "CrashLoopBackOff: back-off 40s; last termination message:\n" + "\n".join(TRACEBACK_TAIL)
    assert one_line(message) == ("CrashLoopBackOff: back-off 40s: model load failed: ValueError: Unrecognized model "
                                 "in /x.")
    assert one_line("replica r1-0 not ready") == "replica r1-0 not ready"
    assert one_line(None) is None
    assert len(one_line("x" * 5000)) <= 600


def test_a_settings_error_is_its_one_line_summary_not_the_documentation_link() -> None:
    """Before: a bad MAX_TOTAL_TOKENS left pydantic's four lines, and the cause became 'For further information visit
    https://errors.pydantic.dev/…' — the value (masked later when it is a secret) and the field were lost."""
    tail = [
        "[supervisor 16:00:00] started runtime pid 4242",
        "2026-12-04 16:00:01,000 ERROR runtime: invalid configuration: max_total_tokens: Input should be a valid "
        "integer, unable to parse string as an integer (got 'abc')",
        "[supervisor 16:00:01] runtime exited with code 2",
    ]
    assert failure_cause(tail) == ("invalid configuration: max_total_tokens: Input should be a valid integer, "
                                   "unable to parse string as an integer (got 'abc')")


def test_the_runtime_logs_a_settings_error_as_one_line(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "MODEL_ID", "PORT"))}
    env.update(MODEL_ID=str(tmp_path), MAX_TOTAL_TOKENS="not-a-number", PORT="0")
    done = subprocess.run([sys.executable, "-m", "runtime"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "invalid configuration" in line]
    assert len(errors) == 1 and "max_total_tokens" in errors[0] and "'not-a-number'" in errors[0], done.stderr
    assert "errors.pydantic.dev" not in done.stderr
    assert failure_cause(done.stderr.splitlines()) == errors[0][errors[0].index("invalid configuration"):]
