"""What a caller of the sandbox sees for code that leaves early or goes past a limit test_sandbox.py does not cover:
an early exit, an oversized result, the file-size limit, and long output or messages (cut, not lost)."""

from __future__ import annotations

import pytest

from adapters.sandbox.jobs import Sandbox

GLOBALS = "adapters.sandbox.jobs:module_globals"


@pytest.fixture(scope="module")
def sandbox():
    """One worker without the qiskit preload (starts in a fraction of a second), 1 MB file and result limits."""
    with Sandbox(workers=1, preload=(), timeout_s=5, memory_mb=256, file_size_mb=1, max_result_mb=1) as sb:
        yield sb


def still_works(sb: Sandbox) -> None:
    r = sb.run("x = 6 * 7", GLOBALS)
    assert (r.outcome, r.value) == ("ok", {"x": 42})


@pytest.mark.parametrize("status, message", [(0, "the code exited before the check ran"),
                                             (3, "the process exited with status 3")])
def test_code_that_ends_its_process_before_the_check_is_a_runtime_error(sandbox, status, message):
    r = sandbox.run(f"import os\nos._exit({status})", GLOBALS)
    assert (r.outcome, r.phase, r.message, r.value) == ("runtime_error", "exec", message, None)
    still_works(sandbox)


def test_a_result_over_the_size_limit_is_refused_not_sent(sandbox):
    r = sandbox.run("x = 'a' * (2 << 20)", GLOBALS)  # 2 MB of JSON against a 1 MB limit
    assert (r.outcome, r.phase, r.message, r.value) == ("runtime_error", "check", "result too large", None)
    still_works(sandbox)


def test_writing_past_the_file_size_limit_fails_at_the_line_that_wrote(sandbox):
    r = sandbox.run("f = open('big.bin', 'wb')\nf.write(b'0' * (2 << 20))\nf.close()", GLOBALS)
    assert (r.outcome, r.phase, r.line, r.error_type) == ("runtime_error", "exec", 2, "OSError")
    assert "File too large" in r.message
    still_works(sandbox)


def test_long_output_keeps_its_tail_and_a_long_message_its_head(sandbox):
    r = sandbox.run("print('x' * 9000 + ' the end')\nraise ValueError('why: ' + 'm' * 5000)", GLOBALS)
    assert (r.outcome, r.line, r.error_type) == ("runtime_error", 2, "ValueError")
    assert len(r.output) == 4000 and r.output.endswith("x the end\n"), "the last lines printed are the ones kept"
    assert len(r.message) == 2000 and r.message.startswith("why: mmm")
