# Copyright © 2026 mlx-kyutai-is contributors
"""An archive job on a Ray cluster: one `Transcriber` actor per worker (each holds one model),
chunks of inputs handed out as workers free up, transcripts streamed back one input at a time.

Faults: an actor whose process or node dies is restarted by Ray (on any node with room) and the
inputs it had not sent back go to the other workers; an input whose worker died
`MAX_ATTEMPTS` times is reported as failed rather than tried forever. Ray is an optional
dependency (``pip install "mlx-kyutai-is[ray]"``), imported only here, when a job starts.
"""

import logging
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Iterator

from ...errors import Error, one_line
from .job import Entry, Outcome
from .workers import Transcriber, chunks

# Chunks queued on one worker: the next one is there as soon as the current one ends.
IN_FLIGHT = 2
# An input whose worker died this many times is reported failed (it may be what kills them).
MAX_ATTEMPTS = 3
# How long the driver waits with no worker alive (all restarting, or none started) before it gives up.
NO_WORKER_TIMEOUT = 600.0
POLL_SECONDS = 0.5
# Seconds to wait for a HOST:PORT address to answer before saying there is no cluster there.
CONNECT_TIMEOUT = 10.0


class ClusterError(Error):
    """The cluster cannot be reached, or no worker is left to do the work."""


def _ray():
    """The `ray` module (an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ClusterError('--ray needs Ray: pip install "mlx-kyutai-is[ray]"') from None
    return ray


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT):
    """A ``HOST:PORT`` address that nothing answers on fails now, not after Ray's minutes of retries."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # auto, local, ray://...: Ray's own lookups, which fail fast
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(
            f"no Ray cluster at {address} ({e.strerror or e}); "
            "start one there with `ray start --head`, or try --ray local"
        ) from None


def _first_line(err: BaseException) -> str:
    """A Ray error as one line: the original exception's message (Ray's errors carry a traceback
    and end with it), without terminal colours."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause)
    lines = [x.strip() for x in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if x.strip()]
    # the package's own errors are written for users: their class name is noise
    return re.sub(r"^mlx_kyutai_is(\.\w+)+: ", "", lines[-1]) if lines else type(err).__name__


class RayWorkers:
    """Transcriber actors on a Ray cluster.

    Parameters
    ----------
    address : str
        As `ray.init` takes it: "auto" (``RAY_ADDRESS`` or the cluster running here),
        ``HOST:PORT``, ``ray://HOST:10001``, or "local" to start a cluster on this machine.
    workers : int, optional
        How many actors (default: one per node alive).
    cpus, gpus : float
        What each actor reserves on its node (Ray's logical resources; ``gpus=1`` puts one
        model on each node that advertises one GPU).
    no_worker_timeout : float
        Seconds with no worker alive (and work left) before `run` raises `ClusterError`.
    **transcriber
        `Transcriber`'s arguments (model, task, batch_size, quantize, dtype, options).
    """

    def __init__(
        self,
        address: str = "auto",
        workers: int | None = None,
        *,
        cpus: float = 1,
        gpus: float = 0,
        no_worker_timeout: float = NO_WORKER_TIMEOUT,
        **transcriber,
    ):
        ray = self.ray = _ray()
        self.batch_size = transcriber.get("batch_size") or 1
        self.no_worker_timeout = no_worker_timeout
        _check_reachable(address)
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(
                f"no Ray cluster at {address!r} ({_first_line(e.__cause__ or e)}); start one with `ray start --head`, "
                "set RAY_ADDRESS, or try --ray local"
            ) from None
        try:
            fits = self._nodes_that_fit(cpus, gpus)
        except BaseException:
            ray.shutdown()
            raise
        if workers is None:
            workers = len(fits)
        actor = ray.remote(Transcriber).options(
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=-1,  # a worker whose process or node died comes back, wherever there is room
            max_task_retries=0,  # ... but its unfinished inputs are the driver's to hand out again
            scheduling_strategy="SPREAD",
        )
        self.actors = [actor.remote(**transcriber) for _ in range(workers)]
        self.state = ["starting"] * workers  # starting, alive, restarting, dead
        self.where = [None] * workers
        self.retried = 0  # inputs handed out again after their worker died
        self.last_error = None

    def _nodes_that_fit(self, cpus: float, gpus: float) -> list[dict]:
        """The nodes alive that have room for one worker (`ClusterError` if none could ever)."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus]
        if not fits:
            have = "; ".join(
                f"{n.get('NodeManagerAddress')}: {r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU"
                for n, r in ((n, n["Resources"]) for n in nodes)
            )
            raise ClusterError(
                f"no node of the cluster has {cpus:g} CPU and {gpus:g} GPU for a worker ({have or 'no node alive'}); "
                "lower --worker-cpus/--worker-gpus, or start the nodes with --num-cpus/--num-gpus"
            )
        return fits

    @property
    def alive(self) -> int:
        return self.state.count("alive")

    def run(self, entries: list[Entry]) -> Iterator[Outcome]:
        """Every entry's `Outcome` once, in completion order, whatever workers die on the way."""
        ray = self.ray
        queue = deque(chunks(entries, self.batch_size))
        attempts = Counter()
        flights = {}  # streaming generator -> (actor number, chunk, indices sent back)
        load = Counter()
        watch = {a.ready.remote(): i for i, a in enumerate(self.actors)}
        none_since = time.monotonic()
        while queue or flights:
            for i in sorted((i for i, s in enumerate(self.state) if s == "alive"), key=load.__getitem__):
                while load[i] < IN_FLIGHT and queue:
                    chunk = queue.popleft()
                    gen = self.actors[i].run.options(num_returns="streaming").remote(chunk)
                    flights[gen] = (i, chunk, set())
                    load[i] += 1
            if self.alive:
                none_since = time.monotonic()
            elif not watch:
                raise ClusterError(f"no worker could start or stay up: {self.last_error or 'none was placed'}")
            elif time.monotonic() - none_since > self.no_worker_timeout:
                raise ClusterError(
                    f"no worker alive for {self.no_worker_timeout:.0f} s ({self.last_error or 'none placed yet'}); "
                    "is there room on the cluster (--worker-cpus/--worker-gpus)?"
                )
            ready, _ = ray.wait([*flights, *watch], num_returns=1, timeout=POLL_SECONDS)
            for w in ready:
                if w in watch:
                    self._started(watch, w)
                    continue
                i, chunk, got = flights[w]
                try:
                    outcome = ray.get(next(w))
                except StopIteration:
                    del flights[w]
                    load[i] -= 1
                    continue
                except ray.exceptions.RayActorError as e:  # the worker died: its inputs go elsewhere
                    del flights[w]
                    load[i] -= 1
                    self.last_error = _first_line(e)
                    if self.state[i] == "alive":
                        self.state[i] = "restarting"
                        watch[self.actors[i].ready.remote()] = i
                    left = [x for x in chunk if x.index not in got]
                    yield from self._retry(left, attempts, queue)
                    continue
                except ray.exceptions.RayTaskError as e:  # the model failed: not any one file's fault
                    del flights[w]
                    load[i] -= 1
                    for x in chunk:
                        if x.index not in got:
                            yield Outcome(x.index, error=f"{x.source}: transcription failed ({_first_line(e)})")
                    continue
                got.add(outcome.index)
                yield outcome

    def _retry(self, left: list[Entry], attempts: Counter, queue: deque) -> Iterator[Outcome]:
        """Hand `left` out again (together the first time, one by one after that, so that an input
        that kills its worker takes no other down with it); give up on one after MAX_ATTEMPTS."""
        again = []
        for x in left:
            attempts[x.index] += 1
            if attempts[x.index] >= MAX_ATTEMPTS:
                error = f"{x.source}: its worker died {attempts[x.index]} times ({self.last_error})"
                yield Outcome(x.index, error=error)
            elif attempts[x.index] == 1:
                again.append(x)
            else:
                queue.appendleft([x])
        if again:
            queue.appendleft(again)
        self.retried += len(left)

    def _started(self, watch: dict, ref):
        """A worker's `ready()` came back: alive, or dead for good (its model failed to load)."""
        ray, i = self.ray, watch.pop(ref)
        try:
            self.where[i] = ray.get(ref)
            self.state[i] = "alive"
        except ray.exceptions.ActorUnavailableError:  # restarting: ask again
            watch[self.actors[i].ready.remote()] = i
        except ray.exceptions.RayActorError as e:
            self.state[i] = "dead"
            self.last_error = _first_line(e)

    def close(self):
        """Stop the actors and leave the cluster (it keeps running for other jobs)."""
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.ray.shutdown()
