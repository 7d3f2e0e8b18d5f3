"""Ways to map :func:`~vmci.fleet.triage.triage` over many dumps: in this process, in a local
process pool, or on a Dask ``distributed`` cluster (the optional extra ``vmci[dask]``).

Every runner yields :class:`~vmci.fleet.record.TriageRecord` objects as they complete (not in
input order) and yields exactly one per path: a worker that dies, or a task that fails, is
retried once, then recorded as a failure (``exit_code`` :data:`~vmci.fleet.record.EXIT_INTERNAL`).

Paths are expanded here, on the caller's machine (files, directories, globs); ``--path-map``
rewrites their prefixes into the paths the workers see, and records keep the caller's path.
``--resume`` skips the dumps a JSON Lines file already records with the same path, size and
modification time.
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmci.errors import UsageError
from vmci.fleet.record import EXIT_INTERNAL, TriageRecord
from vmci.fleet.triage import TriageOptions, triage, triage_task

__all__ = [
    "Plan",
    "RunConfig",
    "expand_paths",
    "failure_record",
    "load_resume",
    "map_path",
    "parse_path_map",
    "plan",
    "run",
]

#: Extra the Dask runner needs.
DASK_HINT = "--dask needs Dask distributed: pip install 'vmci[dask]'"


@dataclass(frozen=True)
class RunConfig:
    """Where the work runs.  ``dask``: ``None`` (local), ``"local"`` (a LocalCluster on loopback)
    or a scheduler address such as ``tcp://host:8786``.  ``jobs``: worker processes (local pool
    or LocalCluster); ``None`` means the CPU count, 1 runs in this process.  ``path_map``:
    ``(old_prefix, new_prefix)`` pairs, first match wins."""

    jobs: int | None = None
    dask: str | None = None
    path_map: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 30.0
    #: Seconds a Dask cluster may have no worker before the dumps not yet done are recorded as
    #: failed (a scheduler keeps tasks pending while it waits for workers, which would never end).
    worker_wait: float = 60.0


class NoWorkerError(RuntimeError):
    """The Dask cluster lost every worker (or its scheduler) and none came back in time."""


@dataclass
class Plan:
    """The dumps to triage and how many were skipped (already in the resume file)."""

    todo: list[str]
    skipped: int = 0
    skipped_paths: list[str] = field(default_factory=list)


# -- paths -----------------------------------------------------------------------------------

def _dir_files(d: Path, recursive: bool) -> list[str]:
    it = d.rglob("*") if recursive else d.iterdir()
    return sorted(str(p) for p in it if p.is_file())


def expand_paths(specs: Iterable[str], *, recursive: bool = False) -> list[str]:
    """Files as given, the files in directories (``recursive``: and below), glob patterns
    (``**`` when ``recursive``).  A path that exists nowhere is kept: its record will say so.
    Duplicates are dropped, order kept."""
    out: dict[str, None] = {}
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            out.update(dict.fromkeys(_dir_files(p, recursive)))
        elif p.exists() or not glob.has_magic(spec):
            out[spec] = None
        else:
            for m in sorted(glob.glob(spec, recursive=recursive)):
                mp = Path(m)
                out.update(dict.fromkeys(_dir_files(mp, recursive) if mp.is_dir() else [m]))
    return list(out)


def parse_path_map(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``OLD=NEW`` strings to prefix pairs."""
    pairs = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise UsageError(f"--path-map takes OLD=NEW (a path prefix and its replacement), not {item!r}")
        pairs.append((old, new))
    return tuple(pairs)


def map_path(path: str, path_map: Sequence[tuple[str, str]]) -> str:
    """``path`` as the workers see it: the first matching prefix replaced."""
    for old, new in path_map:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def load_resume(path: str | os.PathLike[str]) -> set[tuple[str, int | None, float | None]]:
    """The (path, size, mtime) of every record in a JSON Lines file; a missing file is empty,
    and unreadable lines (a run killed mid-write) are ignored."""
    done: set[tuple[str, int | None, float | None]] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    done.add((d["path"], d.get("size"), d.get("mtime")))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UsageError(f"--resume: cannot read {path}: {e.strerror}") from None
    return done


def plan(specs: Iterable[str], *, recursive: bool = False,
         resume: str | os.PathLike[str] | None = None) -> Plan:
    """Expand ``specs`` and drop what ``resume`` already records (same path, size and mtime)."""
    paths = expand_paths(specs, recursive=recursive)
    if resume is None:
        return Plan(paths)
    done = load_resume(resume)
    todo: list[str] = []
    skipped: list[str] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            todo.append(p)
            continue
        (skipped if (p, st.st_size, st.st_mtime) in done else todo).append(p)
    return Plan(todo, len(skipped), skipped)


def failure_record(path: str, error: BaseException) -> TriageRecord:
    """The record of a dump whose task failed twice outside :func:`triage` (a lost worker)."""
    from vmci import __version__

    size = mtime = None
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime
    except OSError:
        pass
    name = type(error).__name__
    return TriageRecord(path=path, size=size, mtime=mtime, error_class=name,
                        error=f"{name}: {error}" if str(error) else name, exit_code=EXIT_INTERNAL,
                        vmci_version=__version__)


# -- runners ---------------------------------------------------------------------------------

def run(paths: Sequence[str], options: TriageOptions | None = None,
        config: RunConfig | None = None) -> Iterator[TriageRecord]:
    """Triage ``paths`` as ``config`` says; yields one record per path as each completes."""
    cfg = config or RunConfig()
    opts = options or TriageOptions()
    if not paths:
        return iter(())
    if cfg.dask is not None:
        return _dask(paths, opts, cfg)
    jobs = cfg.jobs or os.cpu_count() or 1
    if jobs == 1 or len(paths) == 1:
        return _serial(paths, opts, cfg)
    return _processes(paths, opts, cfg, jobs)


def _record(data: dict[str, Any]) -> TriageRecord:
    return TriageRecord.from_dict(data)


def _serial(paths: Sequence[str], opts: TriageOptions, cfg: RunConfig) -> Iterator[TriageRecord]:
    for p in paths:
        mapped = map_path(p, cfg.path_map)
        rec = triage(mapped, opts)
        yield rec if mapped == p else _record({**rec.to_dict(), "path": p})


def _mp_context() -> Any:
    """forkserver where there is one (no fork of a threaded parent: the progress bar has a
    thread), with the triage stack preloaded so each worker starts warm; spawn elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["vmci.fleet.triage", "vmci.analysis.analyze", "vmci.formats"])
        return ctx
    return multiprocessing.get_context("spawn")


def _processes(paths: Sequence[str], opts: TriageOptions, cfg: RunConfig, jobs: int
               ) -> Iterator[TriageRecord]:
    ctx = _mp_context()
    failed: list[str] = []
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(paths)), mp_context=ctx)
    try:
        futures: dict[Future[dict[str, Any]], str] = {
            pool.submit(triage_task, map_path(p, cfg.path_map), opts, p): p for p in paths
        }
        for fut in as_completed(futures):
            try:
                yield _record(fut.result())
            except Exception:  # the worker died (BrokenProcessPool) or could not unpickle
                failed.append(futures[fut])
    finally:  # also when the consumer stops early (an interrupt): queued dumps are dropped
        pool.shutdown(wait=True, cancel_futures=True)
    # Retry each once, alone in a fresh process: a dump that kills its worker takes no other
    # dump down with it a second time.
    for p in failed:
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as one:
                yield _record(one.submit(triage_task, map_path(p, cfg.path_map), opts, p).result())
        except Exception as e:
            yield failure_record(p, e)


#: How often (seconds) a Dask run that is waiting asks the scheduler how many workers it has.
WORKER_POLL = 1.0
#: Seconds to fetch a finished task's record; longer means its worker died with it and Dask is
#: recomputing it elsewhere, so the task goes back among those awaited.
RESULT_WAIT = 5.0


class _QuietAbandonedGather(logging.Filter):
    """Drops asyncio's report of the gather that :data:`RESULT_WAIT` abandoned (distributed's
    ``AllExit``): the task is awaited again, so the traceback would only alarm the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and type(exc).__name__ == "AllExit")


def _workers(client: Any) -> int:
    """The scheduler's worker count; 0 when the scheduler cannot be asked (it is gone too)."""
    try:
        info = client.scheduler_info()
        # distributed >= 2025 lists only the first few workers and counts them all in n_workers
        return int(info.get("n_workers", len(info.get("workers", {}))))
    except Exception:  # OSError, TimeoutError, CommClosedError: no scheduler, so no worker
        return 0


def _dask(paths: Sequence[str], opts: TriageOptions, cfg: RunConfig) -> Iterator[TriageRecord]:
    try:
        import dask
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise UsageError(DASK_HINT) from None
    cluster: Any = None
    asyncio_log = logging.getLogger("asyncio")  # kept for the process: the report comes at exit
    if not any(isinstance(f, _QuietAbandonedGather) for f in asyncio_log.filters):
        asyncio_log.addFilter(_QuietAbandonedGather())
    # A task whose worker dies is rescheduled; the second loss marks it failed (KilledWorker).
    # This sets the scheduler it starts; a remote scheduler takes it from its own config, e.g.
    # DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        if cfg.dask == "local":
            cluster = LocalCluster(n_workers=cfg.jobs or os.cpu_count() or 1, threads_per_worker=1,
                                   processes=True, host="127.0.0.1", scheduler_port=0,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(cfg.dask, timeout=cfg.connect_timeout)
            except OSError as e:
                raise UsageError(f"--dask: cannot reach the scheduler at {cfg.dask}: {e}") from None
    try:
        mapped = [map_path(p, cfg.path_map) for p in paths]
        futures = client.map(triage_task, mapped, [opts] * len(paths), list(paths), retries=1, pure=False)
        where = {f.key: p for f, p in zip(futures, paths, strict=True)}
        pending = dict(zip((f.key for f in futures), futures, strict=True))
        done = dask_completed(futures)
        idle_since: float | None = None
        next_check = 0.0
        while not done.is_empty():
            if not done.has_ready():
                now = time.monotonic()
                if now >= next_check:  # a cluster without workers keeps tasks pending for ever
                    next_check = now + WORKER_POLL
                    idle_since = None if _workers(client) else (idle_since or now)
                    if idle_since is not None and now - idle_since >= cfg.worker_wait:
                        err = NoWorkerError(f"no Dask worker for {cfg.worker_wait:g} s: not triaged")
                        for key, fut in pending.items():
                            fut.cancel()
                            yield failure_record(where[key], err)
                        return
                time.sleep(0.05)
                continue
            for fut in done.next_batch(block=False):
                p = where[fut.key]
                pending.pop(fut.key, None)
                if fut.status == "finished":
                    try:
                        data = fut.result(timeout=RESULT_WAIT)
                    except TimeoutError:  # its worker died before the transfer: Dask recomputes it
                        pending[fut.key] = fut
                        done.add(fut)
                        continue
                    except Exception as e:
                        yield failure_record(p, e)
                        continue
                    yield _record(data)
                    continue
                if fut.status not in ("error", "cancelled"):  # lost with its worker and pending again
                    pending[fut.key] = fut
                    done.add(fut)
                    continue
                try:
                    exc = fut.exception(timeout=RESULT_WAIT)
                except Exception as e:  # a cancelled task's exception() raises CancelledError
                    exc = e
                yield failure_record(p, exc if isinstance(exc, BaseException) else RuntimeError(str(exc)))
                fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

