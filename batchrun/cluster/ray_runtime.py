"""Ray itself, and only here: connecting (or starting a private Ray on this machine), the
governor and dispatch actors, telling a lost actor from other failures, cleaning up.

Imported only by a run with ``--engine ray``; without the extra it says how to install it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from batchrun.cluster.governor import GovernorService
from batchrun.cluster.messages import LeaseAsk, LeaseGrant, WorkerSpec
from batchrun.cluster.worker import DispatchWorker
from batchrun.core.errors import InputError

NAMESPACE = "batchrun"
# "local": a private Ray on this machine, started for the run and stopped after it.
LOCAL = "local"


def require_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray, an optional extra: "
                         "pip install 'batchrun[ray]'") from None
    return ray


@dataclass
class RayRuntime:
    """A connection to Ray for one run: actors made through it are removed by ``close``."""

    ray: ModuleType
    started_here: bool
    actors: list[Any]

    @classmethod
    def connect(cls, address: str | None, *, workers: int, worker_cpus: float) -> RayRuntime:
        """Join the cluster at ``address`` ("auto": the one ``ray start`` made here), or
        start a private Ray on this machine (None or "local") big enough for the workers."""
        ray = require_ray()
        if ray.is_initialized():
            return cls(ray, started_here=False, actors=[])
        common: dict[str, Any] = {"namespace": NAMESPACE, "include_dashboard": False,
                                  "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if address in (None, LOCAL):
                cpus = max(os.cpu_count() or 1, int(workers * worker_cpus + 0.999))
                ray.init(address=LOCAL, num_cpus=cpus, **common)
            else:
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise InputError(
                f"cannot reach the Ray cluster at {address}: {error}. Is it started (`ray start "
                "--head`)? A cluster with token authentication (Ray's default once "
                "~/.ray/auth_token exists) needs RAY_AUTH_MODE=token in the environment with "
                "an explicit address, and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN "
                "(Ray's log lines above say InvalidAuthToken then). Or leave out --ray-address "
                "to run on this machine.") from None
        return cls(ray, started_here=True, actors=[])

    def governor(self, run_key: str, *, rpm: float | None, tpm: float | None,
                 cap: float | None, spent: float) -> Any:
        actor = self.ray.remote(num_cpus=0)(GovernorService)
        handle = actor.options(name=f"batchrun-governor-{run_key}", get_if_exists=True,
                               max_concurrency=1000).remote(rpm, tpm, cap, spent)
        self.actors.append(handle)
        return handle

    def workers(self, specs: list[WorkerSpec], governor: Any, *, cpus: float) -> list[Any]:
        actor = self.ray.remote(num_cpus=cpus)(DispatchWorker)
        handles = []
        for spec in specs:
            handle = actor.options(name=spec.name, scheduling_strategy="SPREAD",
                                   max_concurrency=1000).remote(spec, _Lease(governor))
            handles.append(handle)
        self.actors.extend(handles)
        return handles

    def is_lost(self, error: BaseException) -> bool:
        """A dispatch actor that died (killed, its node gone), not an error of the run."""
        exceptions = self.ray.exceptions
        return isinstance(error, exceptions.RayActorError | exceptions.ActorUnavailableError)

    def kill(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # gone already is fine
            self.ray.kill(handle)

    def close(self) -> None:
        """Remove the run's actors (the governor first of all); stop a Ray started here."""
        for handle in self.actors:
            self.kill(handle)
        self.actors.clear()
        if self.started_here:
            self.ray.shutdown()


class _Lease:
    """A worker's call on the governor (picklable: it travels with the worker's actor)."""

    def __init__(self, governor: Any) -> None:
        self.governor = governor

    async def __call__(self, ask: LeaseAsk) -> LeaseGrant:
        grant: LeaseGrant = await self.governor.lease.remote(ask)
        return grant


def run_key(run_path: str) -> str:
    """The run's name among actors: one governor per run directory."""
    return hashlib.sha256(os.path.abspath(run_path).encode()).hexdigest()[:12]
