"""Run untrusted Python (model-written code) in a sandbox.

Each program runs in a fresh temporary folder, with a scrubbed environment, a wall-clock timeout
and CPU, memory, file-size, open-file and process rlimits. Where Linux namespaces are available
(``unshare``, util-linux) it also runs:

- in new user, mount, PID and network namespaces: no network at all, and when the run ends the
  PID namespace's init dies and the kernel kills every process the program started;
- chrooted into a read-only bind of ``/`` in which only its own folder is writable;
- with every capability dropped, in a user namespace of its own, whose process limit the kernel
  counts per namespace, so a fork bomb hits its own limit without touching other runs. The kernel
  exempts host root from that limit, so a root parent starts the jail as ``nobody`` (with an
  interpreter that ``nobody`` can execute: this Python, else the system's ``/usr/bin/python3``).

Without namespaces it falls back to rlimits alone and warns loudly: the program can then reach
the network and write wherever the user can.
"""
from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from eval.errors import BadInputError

# Inside the new namespaces: bind / read-only at $1, bind the work folder $2 writable inside it,
# chroot there, drop every capability, cap processes at $3, and run the program ("$@").
_JAIL_SCRIPT = r"""
set -e
root=$1; work=$2; nproc=$3; shift 3
mount --rbind / "$root"
for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount --bind "$work" "$root$work"
exec chroot "$root" /bin/sh -c 'cd "$0" && n=$1 && shift && exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- prlimit --nproc="$n:$n" -- "$@"' "$work" "$nproc" "$@"
"""


@dataclass
class SandboxConfig:
    """Limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 2048
    max_output_bytes: int = 64_000  # kept of stdout and of stderr each
    max_file_mb: int = 32  # largest file the program may write (its output streams included)
    max_processes: int = 64
    max_open_files: int = 256
    isolation: str = "auto"  # "auto" (namespaces when they work), "namespace", or "rlimit"

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise BadInputError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise BadInputError(f"memory_mb must be at least 64, got {self.memory_mb}")
        if self.isolation not in ("auto", "namespace", "rlimit"):
            raise BadInputError(f"isolation must be auto, namespace or rlimit, got '{self.isolation}'")


@dataclass
class ExecResult:
    """Outcome of one run. ``status`` is ``passed`` (exit 0), ``failed`` or ``timeout``."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    stdout_tail: str = ""  # the last bytes of stdout, even when ``stdout`` (its head) was capped

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
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
        if self.returncode is not None and self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit code {self.returncode}"


@functools.cache
def namespaces_available() -> bool:
    """Whether the user+mount+PID+network namespaces and the read-only jail can be set up here."""
    if not sys.platform.startswith("linux") or not all(map(shutil.which, ("unshare", "setpriv"))):
        return False
    python, uid = _pick_interpreter(os.geteuid() == 0)
    base, work, root = _make_run_dirs(uid)
    try:
        result = subprocess.run(
            [*_namespace_prefix(str(root), str(work), 16, uid), python, "-c", "pass"],
            capture_output=True, timeout=60, cwd=work, env=_clean_env(work),
        )
        return result.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _make_run_dirs(uid: int | None) -> tuple[Path, Path, Path]:
    """A fresh base folder holding ``work`` (the program's, writable) and ``root`` (a mount point)."""
    base = Path(tempfile.mkdtemp(prefix="curatekit-sbx-"))
    work, root = base / "work", base / "root"
    work.mkdir()
    root.mkdir()
    if uid is not None:  # the jail starts as `nobody`: let it in and let it write
        base.chmod(0o711)
        os.chown(work, uid, uid)
    return base, work, root


def _clean_env(work: Path | str) -> dict[str, str]:
    """Nothing of the parent's environment: no secrets, no proxies, no PYTHONPATH."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(work),
            "TMPDIR": str(work), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1"}


NOBODY = 65534
TAIL_BYTES = 2048


def _runs_for_others(path: str) -> bool:
    """Whether a user other than the owner can execute ``path`` (every folder on the way searchable)."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


def _pick_interpreter(as_root: bool) -> tuple[str, int | None]:
    """The Python that runs programs, and the uid to switch to first (root parents only)."""
    if not as_root:
        return sys.executable, None
    for candidate in (sys.executable, "/usr/bin/python3"):
        if _runs_for_others(candidate):
            return candidate, NOBODY
    warnings.warn(
        "curatekit sandbox: running as root and no Python is executable by 'nobody'; programs run "
        "as root inside their namespaces, where the kernel does not enforce the process limit.",
        RuntimeWarning, stacklevel=3,
    )
    return sys.executable, None


def _namespace_prefix(root: str, work: str, max_processes: int, uid: int | None = None) -> list[str]:
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid is not None else []
    return [*drop, "unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
            "--mount-proc", "--kill-child", "sh", "-c", _JAIL_SCRIPT, "jail", root, work,
            str(max_processes)]


class Sandbox:
    """Runs Python programs under :class:`SandboxConfig` limits; thread-safe, reusable."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        isolation = self.config.isolation
        if isolation == "auto":
            isolation = "namespace" if namespaces_available() else "rlimit"
        elif isolation == "namespace" and not namespaces_available():
            raise BadInputError("isolation='namespace' but Linux namespaces (unshare) do not work here")
        if isolation == "rlimit":
            warnings.warn(
                "curatekit sandbox: Linux namespaces are unavailable; untrusted code runs with "
                "rlimits only and CAN reach the network and write files outside its folder.",
                RuntimeWarning, stacklevel=2,
            )
        self.isolation = isolation
        self.python, self._uid = sys.executable, None
        if isolation == "namespace":
            self.python, self._uid = _pick_interpreter(os.geteuid() == 0)

    def run(self, code: str, timeout_s: float | None = None, require_marker: bool = False) -> ExecResult:
        """Run ``code`` as a Python program; never raises for anything the program does.

        With ``require_marker`` a random marker is printed after ``code``, and the run passes only
        if it appears: a program that leaves early with exit code 0 (``sys.exit(0)``,
        ``os._exit(0)``) before reaching its end does not pass.
        """
        marker = f"curatekit-done-{secrets.token_hex(16)}" if require_marker else None
        if marker:
            code = (f"{code}\n\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n"
                    f"_os.write(1, b'\\n{marker}\\n')\n")
        timeout = timeout_s or self.config.timeout_s
        base, work, root = _make_run_dirs(self._uid)
        try:
            (work / "program.py").write_text(code)
            python = [self.python, "-I", "-B", "program.py"]
            command = python if self.isolation == "rlimit" else [
                *_namespace_prefix(str(root), str(work), self.config.max_processes, self._uid), *python]
            with open(base / "stdout", "w+b") as out, open(base / "stderr", "w+b") as err:
                start = time.monotonic()
                proc = subprocess.Popen(
                    command, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    env=_clean_env(work), preexec_fn=self._limits(timeout), start_new_session=True,
                )
                try:
                    returncode: int | None = proc.wait(timeout=timeout)
                    finished = marker is None or marker in _tail(out, len(marker) + 64)
                    status = "passed" if returncode == 0 and finished else "failed"
                except subprocess.TimeoutExpired:
                    returncode, status = None, "timeout"
                finally:
                    _kill_group(proc)
                duration = time.monotonic() - start
                stdout = _head(out, self.config.max_output_bytes)
                tail = _tail(out, TAIL_BYTES)
                stderr = _head(err, self.config.max_output_bytes)
                if marker:
                    stdout = stdout.replace(f"\n{marker}\n", "")
                    tail = tail.replace(f"\n{marker}\n", "")
                    if returncode == 0 and status == "failed":
                        stderr += "\nexited before the end of the program"
                return ExecResult(status, returncode, stdout, stderr, duration, tail)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _limits(self, timeout: float):
        config = self.config
        memory = config.memory_mb * 2**20

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            cpu = int(timeout) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            size = config.max_file_mb * 2**20
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
            resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_open_files, config.max_open_files))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            # The process limit is set inside the jail (prlimit), where the kernel counts it per
            # user namespace; here it would count every process of the uid, other runs' too.

        return apply


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the run's process group (with namespaces, the PID namespace dies with its init)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(stream, size: int) -> str:
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - size))
    return stream.read().decode("utf-8", errors="replace")


def _head(stream, limit: int) -> str:
    stream.seek(0)
    data = stream.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")
