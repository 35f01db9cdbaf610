"""Stages started warm: a server that has imported torch, MLflow, DVC and rotnet once, and
forks a ready process for each stage `rotnet repro` runs, and for the DVC command around it.

A stage is its own `python stages/<stage>.py` process, as DVC wants; started cold, it spends
about 5 s importing torch (1.3 s), MLflow (2 s: its GenAI layer comes with it) and
`torch._dynamo` (1.5 s: `torch.optim` pulls it in) before it trains. Under `rotnet repro`
the stage script's first line, `hand_over(__file__)`, connects instead to this server (its
address in `ADDRESS_ENV`) and passes it the stage's command line, folder, environment and
its stdin/stdout/stderr; the server forks, the child takes them over and runs the script as
`__main__`, and the stage process exits with the child's status (or its signal). So DVC
still starts, times and records every stage; only the imports are shared. DVC's own process
(`python -m rotnet.dvc_cli`, 0.75 s of imports on a 2-core AVX2 EPYC) is handed over the same
way, as a module (`hand_over_module`); its fork keeps the server's address, so the stage it
starts is handed over in turn. The server also makes the MLflow store of its environment (the
stages'), while it imports, so that the first training stages find its tables made
(`_make_store`), and freezes its objects for the garbage collector before each fork
(`gc.freeze`): a child's first collection would otherwise walk, and so copy, every object
the imports made (0.6 s per stage on that EPYC).

Without the variable (plain `dvc repro`, a stage run by hand) or without a reachable server,
`hand_over` returns and the stage runs in its own process as before. A stage whose
environment differs from the server's in a variable read when torch loads
(`IMPORT_TIME_ENV`) also runs cold. Standard library only: the stage process imports this
module before anything heavy.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

ADDRESS_ENV = "ROTNET_WARM_SERVER"
# Read once, when torch / oneDNN / CUDA load: a child of the server would keep the server's.
IMPORT_TIME_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                   "MKL_ENABLE_INSTRUCTIONS", "CUDA_VISIBLE_DEVICES", "OMP_PROC_BIND",
                   "OMP_PLACES", "LD_PRELOAD", "PYTHONHASHSEED")
# What a stage imports before it trains; the rest loads in the child as it would cold.
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "mlflow", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.pytorch", "rotnet.experiments",
           "rotnet.stage_io", "rotnet.progress", "rotnet.figure5", "rotnet.attention_report",
           "rotnet.report", "rotnet.report_publish", "rotnet.report_render")
# What `dvc repro --single-item` imports (DVC is in the `workflow` extra: where it is not
# installed, its processes run cold, as without a server).
PRELOAD_DVC = ("dvc.cli", "dvc.repo", "dvc.repo.reproduce", "dvc.commands.repro",
               "dvc.utils.serialize", "dvc.scm", "dvc.repo.plots", "dvc.lock", "dvc.dvcfile")
_HEADER = struct.Struct("!I")  # the request's length, sent with the three descriptors
STARTED, EXITED, REFUSED = "started", "exited", "refused"
_in_fork = False  # set in the server's child: what it runs must not be handed over again


# -- the stage's side ---------------------------------------------------------------------

def hand_over(script: str) -> None:
    """Run this stage (`script`, with this process's arguments) in the warm server and exit
    with its status; return at once where there is no server, or it cannot take the stage."""
    _hand_over({"script": os.path.abspath(script)})


def in_fork() -> bool:
    """Whether this process is a fork of the warm server (a stage or DVC handed over)."""
    return _in_fork


def hand_over_module(name: str) -> None:
    """`hand_over` for a process started as `python -m name` (rotnet.dvc_cli)."""
    _hand_over({"module": name})


def _hand_over(target: dict) -> None:
    address = os.environ.get(ADDRESS_ENV)
    if not address or _in_fork:
        return
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(address)
        _send_request(conn, {**target, "argv": sys.argv, "cwd": os.getcwd(),
                             "env": dict(os.environ)})
    except OSError:
        return  # no server (it was stopped, or never started): run cold
    replies = _replies(conn)
    try:
        first = next(replies, None)
    except OSError:  # the server died before taking it (e.g. while importing): run cold
        return
    if first is None or first["kind"] != STARTED:
        if first is not None:
            print(f"warm server: {first['reason']}; running in this process", file=sys.stderr)
        return
    last = next(replies, None)
    if last is None:  # the server went away mid-stage, taking the child with it
        print("warm server: stopped while the stage ran", file=sys.stderr)
        sys.exit(1)
    _exit_as(last["status"])


def _send_request(conn: socket.socket, request: dict) -> None:
    body = json.dumps(request).encode()
    socket.send_fds(conn, [_HEADER.pack(len(body))], [0, 1, 2])
    conn.sendall(body)


def _replies(conn: socket.socket):
    """The server's replies, one JSON object per line, until it closes the connection."""
    with conn, conn.makefile("r", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _exit_as(status: int) -> None:
    """Exit as the child did: its exit code, or killed by the same signal."""
    if status >= 0:
        sys.exit(status)
    signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
    sys.exit(128 - status)  # a signal that does not kill (never expected)


# -- the server's side ---------------------------------------------------------------------

@contextmanager
def warm_server():
    """A server for the stages this process starts (their environment needs
    `{ADDRESS_ENV: address}`, yielded); stopped on leaving, its children with it."""
    folder = tempfile.mkdtemp(prefix="rotnet-warm-")
    address = os.path.join(folder, "server.sock")
    server = subprocess.Popen([sys.executable, "-m", "rotnet.warm", address, str(os.getpid())])
    try:
        for _ in range(100):  # it binds before importing anything heavy: well under 10 s
            if os.path.exists(address) or server.poll() is not None:
                break
            time.sleep(0.05)
        yield {ADDRESS_ENV: address} if server.poll() is None else {}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


# -- the server's own loop --------------------------------------------------------------------

def serve(address: str, parent: int | None = None) -> None:
    """Listen at `address` (a Unix socket path), import `PRELOAD`, then fork a child per
    stage. Stops on SIGTERM or SIGINT, or when process `parent` is gone, ending its
    children; a child is ended too when its stage process goes away."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)  # first, so stages that start meanwhile wait in the backlog
    listener.listen(64)
    store_maker = _make_store()  # before the imports: on the core they leave free
    _preload()
    startup_env = {key: os.environ.get(key) for key in IMPORT_TIME_ENV}
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        while not stop and (parent is None or os.getppid() == parent):
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    _accept(listener, selector, children, startup_env)
                else:
                    _stage_went_away(key.fileobj, selector, children)
            _reap(selector, children)
            if store_maker and os.waitpid(store_maker, os.WNOHANG)[0]:
                store_maker = None
    finally:
        if store_maker:  # not killed: a store cut off between its migrations would not open
            os.waitpid(store_maker, 0)
        for pid in children:
            _end(pid)
        listener.close()
        if os.path.exists(address):
            os.unlink(address)


def _preload() -> None:
    """Import `PRELOAD`, and fill the one cache a stage would otherwise build for 1.5 s:
    the map of installed packages MLflow scans when a model is logged (pretraining)."""
    for module in PRELOAD:
        __import__(module)
    _preload_dvc()
    import torch
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches([f"torch=={torch.__version__.split('+')[0]}"])


def _preload_dvc() -> None:
    """Import `PRELOAD_DVC` where DVC is installed and imports (if not, its processes run
    cold). Importing DVC wraps sys.stdout and stderr (colorama) as the server's own streams
    need; unwrapped, every fork sees its streams as a new process does (a DVC fork sets its
    logging up again: rotnet.dvc_cli)."""
    try:
        for module in PRELOAD_DVC:
            __import__(module)
    except Exception:  # a server that died here would take every stage with it
        pass
    finally:
        if "colorama" in sys.modules:
            sys.modules["colorama"].deinit()


def _make_store() -> int:
    """Fork a child that opens the MLflow store the stages will log to, creating its tables
    and the experiment where they are missing, and exits; returns its pid. Made by the first
    training stage instead, the tables take 1.7 s under the store's lock while the second
    waits on it; made here, it happens while the server imports (on the other core), before
    the first stage is handed over. Its output goes nowhere (MLflow's set-up lines); should
    it fail, the stages meet the same error and report it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        from rotnet.tracking import Tracker

        Tracker().connect()
        status = 0
    finally:
        os._exit(status)


def _accept(listener, selector, children, startup_env) -> None:
    conn, _ = listener.accept()
    try:
        request, fds = _receive_request(conn)
    except (OSError, ValueError):
        conn.close()
        return
    differs = [k for k in IMPORT_TIME_ENV if request["env"].get(k) != startup_env[k]]
    if differs:
        _reply(conn, {"kind": REFUSED, "reason": f"{', '.join(differs)} differ from the server's"})
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # the imports' objects: a collection in the child would copy every page
    pid = os.fork()
    if pid == 0:
        selector.close()
        listener.close()
        for other in children.values():
            other.close()
        _run_child(conn, request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ, pid)
    _reply(conn, {"kind": STARTED, "pid": pid})


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("a malformed request")
    (size,) = _HEADER.unpack(header)
    body = bytearray()
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("a request cut short")
        body.extend(chunk)
    return json.loads(body), fds


def _reply(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the stage process is gone; _stage_went_away ends its child


def _stage_went_away(conn, selector, children) -> None:
    """The stage process sends nothing after its request: readable means it closed."""
    pid = selector.get_key(conn).data
    if conn.recv(1):
        return
    _end(pid)
    selector.unregister(conn)
    del children[pid]
    conn.close()


def _reap(selector, children) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn = children.pop(pid)
            selector.unregister(conn)
            _reply(conn, {"kind": EXITED, "status": os.waitstatus_to_exitcode(status)})
            conn.close()


def _end(pid: int) -> None:
    """Stop a child and reap it: SIGTERM, then SIGKILL after 5 s, so a stage's own
    interrupt handling runs first."""
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# -- the child: becomes the stage process ---------------------------------------------------

def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Take over the stage process's stdio, folder, environment and arguments, run the
    script or module as `__main__`, and exit as that process would have."""
    global _in_fork
    _in_fork = True
    conn.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    # sys.path[0] as `python script` / `python -m module` would set it. A stage's own
    # subprocesses start cold, as before (a spawned worker re-runs the script, `hand_over`
    # included); DVC's fork keeps the address for the stage it starts.
    if "script" in request:
        os.environ.pop(ADDRESS_ENV, None)
        sys.path[0] = os.path.dirname(request["script"])
        run = functools.partial(runpy.run_path, request["script"], run_name="__main__")
    else:
        sys.path[0] = os.getcwd()
        run = functools.partial(runpy.run_module, request["module"], run_name="__main__",
                                alter_sys=True)
    _fresh_process_state()
    status = 0
    try:
        run()
    except SystemExit as exit_:
        status = _exit_code(exit_.code)
    except BaseException:  # as an uncaught exception ends a process: traceback, status 1
        sys.excepthook(*sys.exc_info())
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _fresh_process_state() -> None:
    """What a new process would start with and a fork inherits instead: unseeded random
    generators, torch's thread count from OMP_NUM_THREADS, line-by-line output."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if "torch" in sys.modules and threads.isdigit() and int(threads) > 0:
        sys.modules["torch"].set_num_threads(int(threads))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def main() -> None:
    """`python -m rotnet.warm ADDRESS [PARENT_PID]`: serve until stopped."""
    args = sys.argv[1:]
    if len(args) not in (1, 2):
        sys.exit("usage: python -m rotnet.warm ADDRESS [PARENT_PID]")
    serve(args[0], int(args[1]) if len(args) == 2 else None)


if __name__ == "__main__":
    # Serve from the module as imported, not from this `__main__` copy of it: the flag a
    # fork sets (`_in_fork`) must be the one its own `hand_over` reads.
    from rotnet import warm

    warm.main()
