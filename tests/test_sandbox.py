"""The sandbox contains hostile programs, reports them as failed, and survives them."""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from eval.errors import BadInputError
from eval.sandbox import Sandbox, SandboxConfig, namespaces_available


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    # This machine and CI have namespaces; asking for them makes the suite fail, not degrade,
    # if they ever stop working.
    assert namespaces_available(), "Linux namespaces (unshare) should work on this machine"
    return Sandbox(SandboxConfig(timeout_s=5, memory_mb=1024, max_file_mb=16, isolation="namespace"))


def test_plain_program_passes_and_output_is_captured(sandbox):
    result = sandbox.run("print('hello'); import sys; print('oops', file=sys.stderr)")
    assert result.passed and result.stdout == "hello\n" and result.stderr == "oops\n"


def test_failure_is_reported_with_its_reason(sandbox):
    result = sandbox.run("assert 1 + 1 == 3, 'bad maths'")
    assert result.status == "failed" and result.error == "AssertionError: bad maths"


def test_infinite_loop_times_out(sandbox):
    result = sandbox.run("while True:\n    pass", timeout_s=2)
    assert result.status == "timeout" and result.duration_s < 5


def test_fork_bomb_hits_the_process_limit_and_dies_with_the_run(sandbox):
    token = f"bomb-{uuid.uuid4().hex}"  # in every child's command line, to find them afterwards
    code = (
        "import os, sys\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
        "        n += 1\n"
        "except OSError:\n"
        "    print('blocked after', n, flush=True)\n"
        "while True:\n"
        "    try: os.fork()\n"
        "    except OSError: pass\n"
    )
    result = sandbox.run(code, timeout_s=3)
    assert result.status == "timeout"
    assert result.stdout.startswith("blocked after") and int(result.stdout.split()[2]) < 64
    # Every process it started dies with the PID namespace (the kernel tears it down promptly).
    deadline = time.monotonic() + 10
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(token) == []


def _processes_with(token: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(pid)
        except OSError:
            pass
    return found


def test_huge_allocation_fails(sandbox):
    result = sandbox.run("x = bytearray(10 * 1024**3)\nprint('allocated')")
    assert result.status == "failed" and "MemoryError" in result.error and "allocated" not in result.stdout


def test_cannot_write_or_delete_outside_its_folder(sandbox, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "new.txt"
    for code in (f"open({str(outside)!r}, 'w').write('x')", f"import os; os.remove({str(victim)!r})",
                 "open('/etc/curatekit-pwned', 'w').write('x')", f"import shutil; shutil.rmtree({str(tmp_path)!r})"):
        result = sandbox.run(code)
        assert result.status == "failed", code
        assert "Read-only file system" in result.error or "Permission denied" in result.error, result.error
    assert victim.read_text() == "keep me" and not outside.exists()
    assert not Path("/etc/curatekit-pwned").exists()


def test_can_write_inside_its_own_folder(sandbox):
    result = sandbox.run("open('scratch.txt', 'w').write('ok'); print(open('scratch.txt').read())")
    assert result.passed and result.stdout == "ok\n"


def test_no_network(sandbox):
    # A listening socket on the host's loopback: the sandbox must not reach even that.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        result = sandbox.run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert result.status == "failed" and ("refused" in result.error or "unreachable" in result.error)
        result = sandbox.run("import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)")
        assert result.status == "failed" and "unreachable" in result.error
    finally:
        server.close()


@pytest.mark.parametrize("code", ["import os; os._exit(0)", "import sys; sys.exit(0)", "raise SystemExit"])
def test_early_exit_is_not_a_pass_when_the_end_is_required(sandbox, code):
    assert sandbox.run(code + "\nassert False", require_marker=False).passed  # exit code 0 ...
    result = sandbox.run(code + "\nassert False", require_marker=True)  # ... but the end was never reached
    assert result.status == "failed" and "exited before the end" in result.error


def test_nonzero_exit_fails(sandbox):
    result = sandbox.run("import sys; sys.exit(3)")
    assert result.status == "failed" and result.returncode == 3


def test_huge_output_is_capped(sandbox):
    result = sandbox.run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)", timeout_s=20)
    assert result.status == "failed"  # stopped by the file-size limit (16 MB) before 100 MB
    assert len(result.stdout) <= sandbox.config.max_output_bytes + 100
    assert result.stdout.endswith("[output truncated]")


def test_parent_environment_is_invisible(sandbox, monkeypatch):
    monkeypatch.setenv("CURATEKIT_TEST_SECRET", "hunter2")
    result = sandbox.run(
        "import os\n"
        "assert 'CURATEKIT_TEST_SECRET' not in os.environ\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try: assert b'hunter2' not in open(f'/proc/{pid}/environ', 'rb').read()\n"
        "        except PermissionError: pass\n"
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    assert result.passed, result.stderr
    assert int(result.stdout) <= 3  # its own PID namespace: only the jail's processes are visible


def test_hostile_runs_do_not_disturb_concurrent_good_runs(sandbox):
    good, bad = [], []
    hostile = ["while True: pass", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
               "x = bytearray(10 * 1024**3)"]

    def run_good():
        for _ in range(5):
            good.append(sandbox.run("print(sum(range(10)))"))

    threads = [threading.Thread(target=lambda c=c: bad.append(sandbox.run(c, timeout_s=3))) for c in hostile]
    threads.append(threading.Thread(target=run_good))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(good) == 5 and all(r.passed and r.stdout == "45\n" for r in good)
    assert len(bad) == 3 and not any(r.passed for r in bad)


def test_config_validation():
    with pytest.raises(BadInputError, match="timeout_s must be positive, got 0"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(BadInputError, match="isolation must be auto, namespace or rlimit, got 'none'"):
        SandboxConfig(isolation="none")


def test_rlimit_fallback_warns_loudly():
    with pytest.warns(RuntimeWarning, match="CAN reach the network"):
        fallback = Sandbox(SandboxConfig(isolation="rlimit", timeout_s=5))
    assert fallback.run("print(2 + 2)").stdout == "4\n"
    assert fallback.run("while True: pass", timeout_s=1).status == "timeout"
