"""Shared fixtures: the project's emulator served on a free loopback port, as a real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from batchrun.emulator.server import EmulatorConfig, EmulatorServer


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A started emulator with the default config, stopped after the test."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Factory: ``make_emulator(rpm=60, fail_503=0.1)`` starts one; all stop at teardown."""
    servers: list[EmulatorServer] = []

    def make(**config: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**config)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain sync HTTP client for poking the emulator."""
    with httpx.Client(timeout=10) as client:
        yield client
