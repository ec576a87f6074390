"""``kmock.KubernetesEmulator`` on loopback, driven from a background event loop.

kmock is asyncio; the ``kubernetes`` client our launcher uses is synchronous. The
emulator therefore runs in its own thread's loop and the test talks to it over HTTP
like a real API server: the test plays the Trainer controller by patching
``status.conditions`` and creating the pods a JobSet would create.
"""

from __future__ import annotations

import asyncio
import threading

import kmock
import pytest

TRAINJOBS = "trainer.kubeflow.org/v1alpha1/trainjobs"


class Emulator:
    def __enter__(self) -> Emulator:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start():
            emu = kmock.KubernetesEmulator()
            await emu.__aenter__()
            srv = kmock.Server(emu)
            await srv.__aenter__()
            return emu, srv

        self.emu, self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.emu.resources[TRAINJOBS] = {}
        self.emu.resources["v1/pods"] = {}
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            await self.server.__aexit__(None, None, None)
            await self.emu.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def api_client(self):
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))

    def serve_log(self, namespace: str, pod: str, text: str) -> None:
        """What ``GET .../pods/<pod>/log`` returns (the emulator has no kubelet)."""
        self.emu[f"get /api/v1/namespaces/{namespace}/pods/{pod}/log"] << text.encode()

    def requests(self) -> list:
        return list(self.emu._requests)


@pytest.fixture
def k8s():
    with Emulator() as emu:
        yield emu
