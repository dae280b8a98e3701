"""Worker processes: one system on one workload, set up once, then timed in batches on request.

Worker side: ``python benchmarks/worker.py SYSTEM WORKLOAD``, started by ``harness.run_workload``
(through ``start_worker``), one process per system, so that no other system's thread pools
(OpenBLAS, OpenMP, XLA's Eigen pool) live in the process being timed. Protocol: one JSON line per
message on stdin / stdout.

* At start: builds and checks the system (``harness.setup_system``, against the float64
  reference computed here) and writes its info: ``{"status": "ok", "setup_s": ...,
  "first_call_s": ..., "check": "passed"}``, or ``{"status": "error: ..."}`` /
  ``{"status": "missing (...)"}`` and exits.
* ``{"run": k}``: one untimed step, then k steps, each timed with ``time.perf_counter``; replies
  ``{"times": [...]}``, or ``{"error": "..."}`` if a step raises.
* ``{"quit": true}`` or end of input: exits.

Everything else goes to stderr: file descriptor 1 is pointed at stderr before any system is
imported (libraries that print cannot corrupt the channel) and the replies use a private copy of
the original stdout.

Parent side: ``Worker`` (the process and its channel, with a time limit on every read, and
``settle``, which waits until the worker's threads have stopped using the CPU) and
``start_worker``.
"""

import contextlib
import gc
import json
import os
import select
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.report import one_line

# ----------------------------------------------------------------------------- worker side


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process if the harness dies without cleaning up."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(name: str, workload: str, send) -> None:
    from benchmarks import harness
    from benchmarks import systems as sysmod

    try:
        reference = None if name == sysmod.PEAK else harness.reference_result(workload)
        info, step = harness.setup_system(name, workload, reference)
    except Exception as e:  # noqa: BLE001  (the reference itself failed)
        info, step = {"status": "error: reference: " + harness.short_error(e)}, None
    send(info)
    if step is None:
        return
    gc.collect()
    while line := sys.stdin.readline():
        try:
            msg = json.loads(line)
            if msg.get("quit"):
                return
            k = int(msg["run"])
        except (ValueError, KeyError, TypeError, AttributeError):
            send({"error": "bad command: " + one_line(line, 60)})
            continue
        try:
            step.run()
            times = []
            for _ in range(k):
                t0 = time.perf_counter()
                step.run()
                times.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            send({"error": harness.short_error(e)})
            continue
        send({"times": times})


def main(argv: list[str]) -> int:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # sys.stdout (fd 1) now writes to stderr

    def send(msg: dict) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    _die_with_parent()
    if len(argv) != 2:
        send({"status": "error: usage: worker.py SYSTEM WORKLOAD"})
        return 2
    try:
        serve(argv[0], argv[1], send)
    except BrokenPipeError:  # the harness went away
        return 1
    except Exception as e:  # noqa: BLE001
        send({"status": f"error: worker: {type(e).__name__}: {e}"[:120]})
        return 1
    return 0


# ----------------------------------------------------------------------------- parent side


class WorkerError(Exception):
    """A worker that timed out (it is killed), exited, or replied with an error."""


class Worker:
    """One system's worker process (``worker.py``) and its JSON-line channel."""

    def __init__(self, name: str, workload: str):
        # the worker's stderr (library chatter, tracebacks) goes to a file whose last line explains
        # a crash; with BENCH_TRACEBACK it goes to the terminal
        self._err = None if os.environ.get("BENCH_TRACEBACK") else tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), name, workload],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
        )  # fmt: skip
        self._buf = b""

    def request(self, msg: dict | None, timeout: float) -> dict:
        """Send ``msg`` (None: only read) and return the next JSON line from the worker."""
        if msg is not None:
            try:
                self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
                self.proc.stdin.flush()
            except OSError:
                raise WorkerError(self._exited()) from None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"{"):
                    return json.loads(line)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.proc.kill()
                self.proc.wait()
                raise WorkerError(f"timed out after {timeout:.0f} s (worker killed)")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerError(self._exited())
            self._buf += chunk

    def run(self, k: int, timeout: float) -> list[float]:
        """One untimed step, then ``k`` timed steps; their times."""
        reply = self.request({"run": k}, timeout)
        if "times" not in reply:
            raise WorkerError(one_line(reply.get("error") or reply.get("status"), 90))
        return reply["times"]

    def settle(self, quiet_s: float = 0.03, limit_s: float = 1.0) -> None:
        """Wait until the worker has used no CPU for ``quiet_s`` (at most ``limit_s``): after its
        last call OpenBLAS's threads busy-wait for ~0.1 s, long enough to slow the next batch."""
        t0 = since = time.perf_counter()
        last = self._cpu_ticks()
        if last is None:  # no /proc: wait for a typical busy-wait to end
            time.sleep(0.15)
            return
        while (now := time.perf_counter()) - t0 < limit_s:
            time.sleep(0.01)
            ticks = self._cpu_ticks()
            if ticks != last:
                last, since = ticks, now
            elif now - since >= quiet_s:
                return

    def _cpu_ticks(self) -> int | None:
        """User + system CPU time of all the worker's threads, in clock ticks (Linux)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None

    def _exited(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = "?"
        last = "no output"
        if self._err is not None:
            self._err.seek(0)
            last = (self._err.read().decode(errors="replace").strip().splitlines() or [last])[-1]
        return f"worker exited with code {code}: " + one_line(last, 80)

    def close(self) -> None:
        """Ask the worker to quit; kill it if it does not within 5 s."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"quit": true}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in filter(None, (self.proc.stdin, self.proc.stdout, self._err)):
            with contextlib.suppress(OSError):
                f.close()


def start_worker(name: str, workload: str, limit_s: float) -> tuple[dict, Worker | None]:
    """Start ``name``'s worker and wait (at most ``limit_s``) for its setup info."""
    w, ok = Worker(name, workload), False
    try:
        info = w.request(None, limit_s)
        ok = info.get("status") == "ok"
        if ok:
            w.settle()  # before the next system's setup
    except WorkerError as e:
        info = {"status": "error: setup" + (" " if "timed out" in str(e) else ": ") + str(e)}
    finally:
        if not ok:
            w.close()
    return info, w if ok else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
