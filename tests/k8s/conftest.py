"""Fixtures for the manifest and doctor tests.

``k8s_emulator``: a ``kmock.KubernetesEmulator`` served on loopback from a background event
loop, so the synchronous ``kubernetes`` client (what the doctor uses) talks real HTTP to it.
Objects are stored as the API server would return them; tests add or drop objects to make a
cluster healthy or broken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest


class Emulator:
    """A running emulator: ``url`` for clients, ``put``/``route`` to shape the cluster."""

    def __init__(self, handler, url: str) -> None:
        self.handler = handler
        self.url = url

    def put(self, resource: str, namespace: str | None, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if namespace is not None:
            obj["metadata"]["namespace"] = namespace
        self.handler.objects[resource, namespace, name] = obj

    def declare(self, resource: str) -> None:
        """Make an empty resource listable (the emulator 404s unknown resources)."""
        self.handler.resources[resource] = {}

    def route(self, path: str, payload) -> None:
        """Serve a fixed answer on GET path (service-proxy endpoints)."""
        self.handler[f"get {path}"] << payload

    def kubeconfig(self, path) -> str:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: emu\n"
            f"clusters: [{{name: emu, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: emu, user: {token: test-token}}]\n"
            "contexts: [{name: emu, context: {cluster: emu, user: emu}}]\n"
        )
        return str(path)


@pytest.fixture
def k8s_emulator() -> Iterator[Emulator]:
    import kmock

    ready = threading.Event()
    box: dict = {}

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            box["stop"] = asyncio.Event()
            box["emu"] = Emulator(handler, str(server.url).rstrip("/"))
            ready.set()
            await box["stop"].wait()

    def thread_main() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            loop.run_until_complete(serve())
        except BaseException as e:  # surfaced to the test below
            box["error"] = e
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="kmock", daemon=True)
    thread.start()
    assert ready.wait(20), "the Kubernetes emulator did not start within 20 s"
    if "error" in box:
        raise box["error"]
    try:
        yield box["emu"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
