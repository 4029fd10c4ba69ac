"""Worker processes for the scan: ``python -m bubbly_metrics._worker`` serving tasks on its pipes.

Why not :mod:`multiprocessing`: its "spawn" start method re-imports the caller's main module in
every worker (a user's unguarded script would run again, once per worker), "fork" would copy
Polars' thread pool mid-flight, and its queues need ``/dev/shm``, which AWS Lambda lacks.  A
plain subprocess speaking length-prefixed pickles over stdin/stdout has none of these problems.

This module stays free of heavy imports: a worker imports what its first task needs.

What a task logs in a worker comes back with its result and is handled here by the logger of
the same name, so it reaches this process's handlers (the Lambda's JSON log lines, say) as if
the task had run here.

Workers run ``sys.executable`` unless ``BUBBLY_METRICS_WORKER_PYTHON`` holds another command
(split as a shell would): an interpreter that cannot be executed directly, such as an arm64
CPython under ``qemu-aarch64 -L ROOT`` (tests/test_emulated_bundle.py), still gets workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import IO, Any

from bubbly_metrics.exceptions import WorkerError

__all__ = ["ProcessPool"]

_HEADER = 8


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _send(stream: IO[bytes], payload: bytes) -> None:
    stream.write(len(payload).to_bytes(_HEADER, "little"))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    header = _read_exact(stream, _HEADER)
    return None if header is None else _read_exact(stream, int.from_bytes(header, "little"))


class ProcessPool:
    """A fixed pool of worker processes with the ``submit``/``shutdown`` part of an Executor.

    One feeder thread per worker takes the next task, sends it, and waits for its result
    (waiting on a pipe releases the GIL).  A worker that dies fails the task it held with a
    :class:`RuntimeError`.
    """

    def __init__(self, workers: int, *, local: int = 0) -> None:
        """Start ``workers`` worker processes, plus ``local`` lanes that run tasks on threads here.

        A local lane saves a process (its interpreter, its Polars and its memory high-water
        mark; see docs/performance.md) where this process has a core's worth of
        time to spare, as when it only waits for and merges the workers' results.
        """
        env = {
            **os.environ,
            "POLARS_MAX_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            _LOG_LEVEL: str(logging.getLogger("bubbly_metrics").getEffectiveLevel()),
        }
        self._tasks: SimpleQueue[tuple[Future[Any], bytes] | None] = SimpleQueue()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._locals: list[threading.Thread] = []
        try:
            for _ in range(workers):
                self._procs.append(
                    subprocess.Popen(
                        # -P: not the working directory first on sys.path (``-m`` puts it there),
                        # so a worker imports the modules this process did, from its sys.path.
                        [*worker_python(), "-P", "-m", "bubbly_metrics._worker"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
        except BaseException:
            self.shutdown()
            raise
        self._threads = [
            threading.Thread(target=self._feed, args=(proc,), name="bubbly-worker-feed", daemon=True)
            for proc in self._procs
        ]
        self._locals = [
            threading.Thread(target=self._run_here, name="bubbly-worker-local", daemon=True) for _ in range(local)
        ]
        for thread in self._threads + self._locals:
            thread.start()

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while (task := self._tasks.get()) is not None:
            future, payload = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _send(proc.stdin, payload)
                reply = _receive(proc.stdout)
            except (OSError, ValueError) as exc:  # ValueError: a pipe closed by shutdown()
                reply, problem = None, f"{type(exc).__name__}: {exc}"
            else:
                problem = ""
            if reply is None:
                # The worker died (killed, out of memory): fail its task and, so that nobody
                # waits forever, every task this feeder takes from now on.
                code = _exit_code(proc)
                dead = WorkerError(
                    f"a worker process died (exit code {code}) while reading the export {problem}".rstrip()
                )
                future.set_exception(dead)
                while (task := self._tasks.get()) is not None:
                    if task[0].set_running_or_notify_cancel():
                        task[0].set_exception(dead)
                return
            try:
                status, value, records = pickle.loads(reply)
            except Exception as exc:  # noqa: BLE001 - e.g. an exception class that cannot be rebuilt here
                future.set_exception(WorkerError(f"a worker process failed and its error could not be read: {exc}"))
                continue
            _handle(records)
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run_here(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, payload = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                fn, args = pickle.loads(payload)
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - raised by the caller, as from a worker
                future.set_exception(exc)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a worker; ``fn`` and ``args`` must be picklable."""
        future: Future[Any] = Future()
        self._tasks.put((future, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)))
        return future

    def shutdown(self) -> None:
        """Stop the workers (after their current task) and wait for them."""
        for _ in range(len(self._procs) + len(self._locals)):
            self._tasks.put(None)
        for proc in self._procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for thread in self._locals:
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


WORKER_PYTHON = "BUBBLY_METRICS_WORKER_PYTHON"


def worker_python() -> list[str]:
    """The command that starts a worker's interpreter (``BUBBLY_METRICS_WORKER_PYTHON``, or this one)."""
    return shlex.split(os.environ.get(WORKER_PYTHON, "")) or [sys.executable]


def _exit_code(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _rebuildable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a WorkerError carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means the parent could not rebuild it either
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc


_LOG_LEVEL = "BUBBLY_METRICS_LOG_LEVEL"


class _Collect(logging.Handler):
    """Keeps a task's log records, made safe to pickle, to send back with its result."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # arguments may not pickle
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            try:
                pickle.loads(pickle.dumps(record))  # it travels with the result: it must not sink it
            except Exception:  # noqa: BLE001 - an extra attribute that cannot travel: keep the message
                record = logging.makeLogRecord(
                    {"name": record.name, "levelno": record.levelno, "levelname": record.levelname, "msg": record.msg}
                )
            self.records.append(record)
        except Exception:  # noqa: BLE001 - a bad log call never fails the task (as in any handler)
            self.handleError(record)


def _handle(records: list[logging.LogRecord]) -> None:
    """Hand records logged in a worker to this process's loggers of the same names."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _serve() -> None:
    """Worker loop: read a task, run it, write ``(status, result or exception, log records)``."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbound, outbound = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    collect = _Collect()
    logging.getLogger().addHandler(collect)  # the root's level (WARNING) for other libraries
    logging.getLogger("bubbly_metrics").setLevel(int(os.environ.get(_LOG_LEVEL) or logging.WARNING))
    while (payload := _receive(inbound)) is not None:
        fn, args = pickle.loads(payload)
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - shipped back to the caller, which raises it
            reply = ("error", _rebuildable(exc))
        records, collect.records = collect.records, []
        try:
            data = pickle.dumps((*reply, records), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
            error = WorkerError(f"a worker's result could not be sent back: {exc}")
            data = pickle.dumps(("error", error, records), protocol=pickle.HIGHEST_PROTOCOL)
        _send(outbound, data)


if __name__ == "__main__":
    _serve()
