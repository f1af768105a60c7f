"""The worker that runs inside the jail (see :mod:`eval.sandbox` for the threat model).

Standard library only: the parent passes this file's source with ``python -I -S -B -c``. One
worker serves one job at a time over length-prefixed JSON messages:

- fd 0 (from the parent): job headers: the candidate's code and the limits;
- fd 1 (to the parent): one result per job;
- the judge channel (from the parent, its fd number in ``argv[2]``, read only by the judge): the
  trusted part of a job: the token, the problem's prompt, the test code and the entry points.

Per job the worker forks

- the **candidate** process first: it runs the model's code, then serves calls of the entry point
  over two pipes (arguments and results as plain values, see :func:`encode`). It holds no
  descriptor of the worker's channels and has never seen a test or a token;
- the **judge** process next (test jobs only): it reads the trusted part from its channel, runs the
  prompt and the test code itself, with the entry point replaced by a proxy that calls the
  candidate, and writes the verdict with the token to a pipe that only it holds.

The worker is PID 1 of its namespace and non-dumpable, so the candidate can neither signal nor
trace it nor read its memory or descriptors; after each job it kills every other process of the
namespace (``kill(-1)``) and wipes the job's folder.
"""
import builtins
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

_LEN = struct.Struct(">I")
MAX_MESSAGE = 64 << 20
TAIL = 2048
_PRELOAD = ("math", "re", "string", "itertools", "collections", "functools", "heapq", "bisect",
            "random", "typing", "hashlib", "fractions", "decimal", "statistics", "datetime", "copy")


# -- messages ------------------------------------------------------------------------------------

def _read_exact(fd, size):
    buf = bytearray()
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_message(fd):
    (size,) = _LEN.unpack(_read_exact(fd, _LEN.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is over the limit")
    return json.loads(_read_exact(fd, size))


def write_message(fd, obj):
    data = json.dumps(obj).encode()
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


# -- plain values across the boundary ------------------------------------------------------------

def encode(value, depth=0):
    """A JSON-able form of a value built only of exact builtin types (no subclasses, no objects
    with their own ``__eq__``); anything else raises TypeError."""
    if depth > 100:
        raise TypeError("value nested over 100 levels")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind in (tuple, set, frozenset):
        tag = {tuple: "tuple", set: "set", frozenset: "frozenset"}[kind]
        return {tag: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    raise TypeError(f"a {kind.__name__} cannot cross the sandbox boundary (plain values only)")


def decode(obj, depth=0):
    """The value :func:`encode` made; anything malformed raises ValueError."""
    if depth > 100:
        raise ValueError("value nested over 100 levels")
    kind = type(obj)
    if obj is None or kind in (bool, int, float, str):
        return obj
    if kind is list:
        return [decode(v, depth + 1) for v in obj]
    if kind is dict and len(obj) == 1:
        ((tag, body),) = obj.items()
        if tag in ("tuple", "set", "frozenset") and type(body) is list:
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](decode(v, depth + 1) for v in body)
        if tag == "dict" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) is float for x in body):
            return complex(*body)
    raise ValueError("malformed value from the candidate")


# -- the candidate process -----------------------------------------------------------------------

def _limit(limits, nproc):
    memory = limits["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(limits["timeout_s"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    size = limits["max_file_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:  # counted per user namespace in a jail; on the host it would count the user's
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"],) * 2)


def _keep_only(fds):
    """Move ``fds`` to 0, 1, 2, 3, 4 (in order) and close every other descriptor."""
    moved = [os.dup(fd) for fd in fds]
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(moved), 1 << 16)


def candidate(job, stdin, out_w, err_w, req_r, resp_w):
    """Run the model's code, then serve calls of its entry point (never returns)."""
    _keep_only([stdin, out_w, err_w, req_r, resp_w])
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    os.setsid()
    _limit(job["limits"], job["nproc"])
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    code = 1
    try:
        exec(compile(job["code"], "<candidate>", "exec", dont_inherit=True), namespace)
        write_message(4, {"loaded": True})
        code = 0
        if job["entry_points"]:
            _serve(namespace, job["entry_points"])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if err.code is not None and not isinstance(err.code, int):
            print(err.code, file=sys.stderr)
    except BaseException as err:
        traceback.print_exc()
        try:
            write_message(4, {"raised": [type(err).__name__, str(err)[:500]]})
        except OSError:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _serve(namespace, names):
    """Answer the judge's calls of the functions ``names`` until it hangs up."""
    while True:
        try:
            request = read_message(3)
        except EOFError:
            return
        try:
            name = request["name"]
            function = namespace.get(name) if name in names else None
            if not callable(function):
                raise NameError(f"name '{name}' is not defined")
            result = function(*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"value": encode(result)}
        except BaseException as err:  # the judge decides what a raise means for the test
            reply = {"raised": [type(err).__name__, str(err)[:500]]}
        write_message(4, reply)


# -- the judge process ---------------------------------------------------------------------------

def _proxy(name, req_w, resp_r):
    """A candidate function as the test sees it: each call crosses to the candidate process."""
    def call(*args, **kwargs):
        write_message(req_w, {"name": name, "args": encode(list(args)), "kwargs": encode(kwargs)})
        reply = read_message(resp_r)
        if type(reply) is dict and "value" in reply:
            return decode(reply["value"])
        raise _raised(reply)
    call.__name__ = call.__qualname__ = name
    return call


def _raised(reply):
    """The exception the candidate raised, as a builtin type (RuntimeError for any other)."""
    kind, text = (reply.get("raised") if type(reply) is dict else None) or ("RuntimeError", "bad reply")
    kind, text = str(kind), str(text)
    exc = getattr(builtins, kind, None)
    # StopIteration would end the test's map/zip/for loop early instead of failing it.
    if isinstance(exc, type) and issubclass(exc, Exception) and not issubclass(exc, (StopIteration, StopAsyncIteration)):
        return exc(text)
    return RuntimeError(f"{kind}: {text}")


def judge(job_id, judge_fd, limits, req_w, resp_r, verdict_w):
    """Read the trusted part of job ``job_id`` from ``judge_fd``, run the tests, write the verdict."""
    while True:  # a part left behind by a judge that died early belongs to an older job
        trusted = read_message(judge_fd)
        if trusted["job"] == job_id:
            break
    _keep_only([os.open(os.devnull, os.O_RDWR)] * 3 + [req_w, resp_r, verdict_w])
    memory = limits["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    verdict = {"error": "judge did not finish"}
    try:
        hello = read_message(4)
        if hello.get("loaded") is not True:
            raise _raised(hello)
        namespace = {"__name__": "__main__"}
        for source, label in ((trusted["prelude"], "<prompt>"), (trusted["test"], "<test>")):
            exec(compile(source, label, "exec", dont_inherit=True, optimize=0), namespace)
        # The entry point always comes from the candidate; another name only if neither the prompt,
        # the test nor the builtins bind it (a candidate must not replace abs or a prompt helper).
        names = [n for i, n in enumerate(trusted["entry_points"])
                 if i == 0 or (n not in namespace and not hasattr(builtins, n))]
        proxies = [_proxy(name, 3, 4) for name in names]
        namespace.update(zip(names, proxies))
        outcome = namespace["check"](proxies[0] if proxies else None)
        verdict = {"token": trusted["token"], "passed": True}
        if trusted["counts"]:
            passed, total = outcome
            verdict["counts"] = [int(passed), int(total)]
    except BaseException as err:
        verdict = {"error": f"{type(err).__name__}: {err}"[:500]}
    write_message(5, verdict)
    os._exit(0)


# -- the worker ----------------------------------------------------------------------------------

class _Stream:
    """Reads a pipe to its end, keeping the head and the tail and counting every byte."""

    def __init__(self, fd, head):
        self.fd, self.head_limit, self.head, self.tail, self.total = fd, head, b"", b"", 0

    def read(self):
        data = os.read(self.fd, 1 << 16)
        if data:
            self.total += len(data)
            if len(self.head) < self.head_limit:
                self.head += data[: self.head_limit - len(self.head) + 1]
            self.tail = (self.tail + data)[-TAIL:]
        return bool(data)

    def text(self):
        """(head, tail, truncated): the head cut at the limit, the last bytes."""
        head = self.head[: self.head_limit].decode("utf-8", "replace")
        return head, self.tail.decode("utf-8", "replace"), self.total > self.head_limit


def _fork(target, *args):
    pid = os.fork()
    if pid == 0:
        try:
            target(*args)
        finally:
            os._exit(1)
    return pid


def run_job(job, job_id, scratch, judge_fd):
    """One job in a fresh folder ``scratch/job-<id>``; afterwards every process but this one is
    killed and everything the job left in ``scratch`` and in IPC objects is removed."""
    limits = job["limits"]
    start = time.monotonic()
    workdir = os.path.join(scratch, f"job-{job_id}")
    os.mkdir(workdir, 0o700)
    os.chdir(workdir)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    cand = _fork(candidate, job, devnull, out_w, err_w, req_r, resp_w)
    os.close(devnull)
    for fd in (out_w, err_w, req_r, resp_w):
        os.close(fd)
    judge_pid, verdict_r = None, None
    if job["judged"]:  # the verdict pipe is made after the candidate was forked: it never has it
        verdict_r, verdict_w = os.pipe()
        judge_pid = _fork(judge, job_id, judge_fd, limits, req_w, resp_r, verdict_w)
        for fd in (verdict_w, req_w, resp_r):
            os.close(fd)
    else:
        os.close(req_w)
    streams = [_Stream(out_r, limits["max_output_bytes"]), _Stream(err_r, limits["max_output_bytes"])]
    notes = _Stream(verdict_r if job["judged"] else resp_r, MAX_MESSAGE)
    outcome, cand_status = _collect(streams, notes, cand, start + limits["timeout_s"], limits)
    _kill_all(cand, judge_pid)
    if cand_status is None:
        cand_status = _status(os.waitpid(cand, 0)[1])
    _reap_all()
    for stream in streams + [notes]:
        _drain(stream)
        os.close(stream.fd)
    os.chdir("/")
    clean = _wipe(scratch) & _remove_ipc()
    stdout, stdout_tail, stdout_cut = streams[0].text()
    stderr, _, stderr_cut = streams[1].text()
    try:
        note = json.loads(notes.head[_LEN.size:]) if outcome == "done" and notes.head else None
    except ValueError:
        note = None
    return {"outcome": outcome, "returncode": cand_status, "stdout": stdout, "stdout_tail": stdout_tail,
            "stderr": stderr, "truncated": [stdout_cut, stderr_cut], "note": note,
            "duration_s": time.monotonic() - start, "clean": clean}


def _wipe(root):
    """Remove everything under ``root``, whatever modes the job set (the job runs as this user, so
    it cannot keep the owner from restoring them). True when ``root`` is empty afterwards."""
    try:
        os.chmod(root, 0o700)
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                _wipe(path)
                os.rmdir(path)
            else:
                os.unlink(path)
        return not os.listdir(root)
    except OSError:
        return False


def _remove_ipc():
    """Remove the SysV shared memory, semaphores and message queues and the POSIX message queues
    the job made (they outlive processes). True when none is left."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return False
    for kind, remove in (("shm", lambda i: libc.shmctl(i, 0, None)), ("sem", lambda i: libc.semctl(i, 0, 0)),
                         ("msg", lambda i: libc.msgctl(i, 0, None))):  # IPC_RMID = 0
        for i in _ipc_ids(kind):
            remove(i)
    if os.path.isdir("/dev/mqueue"):
        for name in os.listdir("/dev/mqueue"):
            try:
                os.unlink(os.path.join("/dev/mqueue", name))
            except OSError:
                pass
    left = any(_ipc_ids(kind) for kind in ("shm", "sem", "msg"))
    return not left and not (os.path.isdir("/dev/mqueue") and os.listdir("/dev/mqueue"))


def _ipc_ids(kind):
    try:
        with open(f"/proc/sysvipc/{kind}") as f:
            return [int(line.split()[1]) for line in f.read().splitlines()[1:] if line.strip()]
    except (OSError, ValueError, IndexError):
        return []


def _collect(streams, notes, cand, deadline, limits):
    """Read the outputs until the job is over: the judge closed its verdict pipe (test jobs) or
    the candidate exited (plain programs). Returns ("done" | "timeout" | "output", status)."""
    max_bytes = limits["max_file_mb"] << 20
    pidfd = os.pidfd_open(cand)
    waiting = {s.fd: s for s in streams + [notes]}
    cand_status = None
    try:
        while True:
            if (notes.fd not in waiting) if limits["judged"] else (cand_status is not None):
                return "done", cand_status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", cand_status
            ready, _, _ = select.select(list(waiting) + ([pidfd] if cand_status is None else []), [], [], remaining)
            for fd in ready:
                if fd == pidfd:
                    cand_status = _status(os.waitpid(cand, 0)[1])
                elif not waiting[fd].read():
                    del waiting[fd]
            if streams[0].total + streams[1].total > max_bytes:
                return "output", cand_status
    finally:
        os.close(pidfd)


def _status(wait_status):
    return os.waitstatus_to_exitcode(wait_status)


def _drain(stream):
    """Read what is left in a pipe whose writers are gone (or, without a PID namespace, what is
    there now)."""
    os.set_blocking(stream.fd, False)
    try:
        while stream.read():
            pass
    except BlockingIOError:
        pass


def _kill_all(*pids):
    """Kill every process of the job: as PID 1 of the namespace, every other process in it."""
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    for pid in pids:  # no namespace: the job's process groups (a daemon that left them survives)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if os.getpid() != 1:
                return
            time.sleep(0.001)  # killed processes still exiting


def _set_nondumpable():
    """prctl(PR_SET_DUMPABLE, 0): no process of the same user may trace this one, read its memory
    or open its descriptors through /proc. Children inherit it (until they exec)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, signals from inside are then ignored
    nondumpable = _set_nondumpable()
    for name in _PRELOAD:  # forked jobs find them loaded
        __import__(name)
    scratch, judge_fd = sys.argv[1], int(sys.argv[2])
    write_message(1, {"ready": {"pid": os.getpid(), "nondumpable": nondumpable,
                                "python": sys.version.split()[0], "uid": os.getuid()}})
    job_id = 0
    while True:
        try:
            job = read_message(0)
        except EOFError:
            os._exit(0)
        job_id += 1
        job["limits"]["judged"] = job["judged"]
        result = run_job(job, job_id, scratch, judge_fd)
        write_message(1, result)
        if not result["clean"]:  # something of this job may outlive it: stop, the parent starts anew
            os._exit(3)


if __name__ == "__main__":
    main()
