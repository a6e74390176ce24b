"""`[server] workers = N`: one supervisor process, N worker processes each running the daemon.

Python runs one core per process, so a host with several cores runs several copies of the full
daemon on the same listeners (SO_REUSEPORT: the kernel spreads TCP connections and UDP datagrams
over them). The RADIUS sockets are bound here, one per worker, and steered by the datagram
itself (bridge.radius.steering), so a retransmission reaches the worker that holds its first
copy and an EAP round the worker that holds its conversation, from any source port. The
guessing state they must agree on lives in the `[state]` backend (SQLite file or Redis), never
in a worker.

The supervisor:
- reserves concrete ports for `HOST:0` listeners (`bridge.runtime.listeners`), starts the
  workers (`patron-bridge serve --worker I`), and prints one `ready` line when all of them
  listen; a worker that exits before that fails the start with its code;
- restarts a worker that dies, after a delay that doubles while it keeps dying young, with a
  log line each time;
- on SIGINT/SIGTERM passes the signal on and waits for every worker to finish (each drains its
  audit lines before it exits), then exits;
- passes SIGHUP and SIGUSR1 on: each worker re-reads its config in place (`bridge.reload`,
  open connections stay up) and reopens its log files; changes that need a restart (listen
  addresses, the store) are named in each worker's `config_reloaded` line;
- gives each worker a stdin pipe and nothing else: if the supervisor dies, the pipe closes and
  the workers stop (no orphans holding the ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.config import Config
from bridge.runtime import listeners

log = structlog.get_logger("bridge.supervisor")

YOUNG = 10.0  # a worker that dies within this many seconds of its start doubles the next delay
STOP_TIMEOUT = 30.0  # seconds a worker may take to finish on SIGTERM before it is killed


@dataclass(slots=True)
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    started: float
    ready: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    retiring: bool = False  # told to stop (shutdown or SIGHUP replacement): no restart


class Supervisor:
    def __init__(self, config: Config, config_path: Path, count: int) -> None:
        self.config = config
        self.config_path = config_path
        self.count = count
        self.mapping: dict[str, str] = {}
        # Per RADIUS listen address, the workers' sockets in worker order, held for the
        # supervisor's life (bridge.runtime.listeners.radius_sockets, bridge.radius.steering).
        self.radius: list[list[socket.socket]] = []
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.stop_signal = signal.SIGTERM
        self.delay = [config.server.restart_delay] * count
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()

    # -- processes ------------------------------------------------------------------------------
    async def spawn(self, index: int) -> Worker:
        argv = [sys.executable, "-m", "bridge", "--config", str(self.config_path), "serve"]
        mapping = dict(self.mapping)
        fds = []
        for i, group in enumerate(self.radius):  # the same socket for every life of worker I
            fds.append(group[index].fileno())
            mapping[f"radius.listen.{i}{listeners.FD_SUFFIX}"] = str(fds[-1])
        argv += ["--worker", str(index), "--listen-map", json.dumps(mapping)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=fds
        )
        worker = Worker(index, proc, time.monotonic())
        self._track(self._watch(worker))
        return worker

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: Worker) -> None:
        """Read the worker's ready line, then wait for it to exit and decide what follows."""
        assert worker.proc.stdout is not None
        while True:
            line = await worker.proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                info = json.loads(line)
                ready = isinstance(info, dict) and info.get("event") == "ready"
                if ready and not worker.ready.done():
                    worker.ready.set_result(info)
        code = await worker.proc.wait()
        if not worker.ready.done():
            worker.ready.set_exception(WorkerFailed(worker.index, code))
        if self.workers.get(worker.index) is worker and not worker.retiring:
            del self.workers[worker.index]
            if not self.stopping:
                self._track(self._restart(worker, code))
        if self.stopping and not self.workers:
            self._done.set()

    async def _restart(self, dead: Worker, code: int) -> None:
        lived = time.monotonic() - dead.started
        index = dead.index
        delay = self.delay[index] if lived < YOUNG else self.config.server.restart_delay
        self.delay[index] = min(delay * 2 or 0.5, self.config.server.restart_delay_max)
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        log.error("worker_died", worker=index, pid=dead.proc.pid, how=how, restart_in=delay)
        await asyncio.sleep(delay)
        if self.stopping:
            return
        worker = await self.spawn(index)
        self.workers[index] = worker
        try:
            await worker.ready
        except WorkerFailed:
            return  # its own watch restarts it again, later
        log.warning("worker_restarted", worker=index, pid=worker.proc.pid)

    # -- the life of the service ----------------------------------------------------------------
    async def run(self, on_ready: Any) -> int:
        self.mapping, held = listeners.reserve(self.config, skip=("radius.listen",))
        try:
            radius, self.radius = listeners.radius_sockets(self.config, self.count)
        except BaseException:
            for sock in held:
                sock.close()
            raise
        self.mapping.update(radius)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop, sig)
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self._pass_on, sig)
        try:
            try:
                # Worker 0 first, alone: it creates what must exist once (the pepper file, a
                # new store, the state file's tables); the others then start together.
                self.workers[0] = await self.spawn(0)
                first = await self.workers[0].ready
                for index in range(1, self.count):
                    self.workers[index] = await self.spawn(index)
                infos = [first] + [await self.workers[i].ready for i in range(1, self.count)]
            except WorkerFailed as exc:
                log.error("worker_start_failed", worker=exc.index, code=exc.code)
                self._stop(signal.SIGTERM)
                await self._wait_all()
                self._close_radius()
                return exc.code if exc.code > 0 else 1
        finally:
            for sock in held:
                sock.close()
        pids = [info["pid"] for info in infos]
        log.info("ready", workers=pids, listeners=infos[0]["listeners"])
        listening = infos[0]["listeners"]
        on_ready({"event": "ready", "pid": os.getpid(), "workers": pids, "listeners": listening})
        while not self.stopping:
            await self._done.wait()
        await self._wait_all()
        self._close_radius()
        log.info("stopped")
        return 0

    def _close_radius(self) -> None:
        for group in self.radius:
            for sock in group:
                sock.close()
        self.radius = []

    def _stop(self, sig: int) -> None:
        """SIGINT/SIGTERM: pass it on to every worker; they finish their work and exit."""
        if not self.stopping:
            log.info("stopping", signal=signal.Signals(sig).name)
        self.stopping = True
        self.stop_signal = signal.Signals(sig)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)
        if not self.workers:
            self._done.set()

    async def _wait_all(self) -> None:
        procs = [w.proc for w in self.workers.values()]
        if not procs:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    log.error("worker_kill", pid=proc.pid, detail="did not stop in time")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pass_on(self, sig: int) -> None:
        """SIGHUP (reload the config, reopen logs) and SIGUSR1 (reopen logs): every worker
        does it in place, so no connection is dropped."""
        log.info("signal_passed_on", signal=signal.Signals(sig).name)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)


class WorkerFailed(Exception):
    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} exited with {code}")
        self.index = index
        self.code = code


def supervise(config: Config, config_path: Path, on_ready: Any) -> int:
    """Run the supervisor until SIGINT/SIGTERM; its exit code."""
    supervisor = Supervisor(config, config_path, config.server.worker_count())
    return asyncio.run(supervisor.run(on_ready))
