"""Container tests: a real Docker engine and the component image.

They run from ``.ci/docker.sh``, which starts a private dockerd, builds the image and sets
``COMMIT_DOCKER_TESTS=1``. Without that variable (``make test``, which starts no engine) they
are deselected at collection; with it, a missing engine or image is a failure, never a skip:
CI must not go green without having run a container.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.platform import RUN_AS_GROUP, RUN_AS_USER, component_image

HERE = Path(__file__).parent
ENABLED = os.environ.get("COMMIT_DOCKER_TESTS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a Docker engine and the component image")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if HERE in Path(str(i.path)).parents]
    for item in mine:
        item.add_marker(pytest.mark.docker)
    if ENABLED or not mine:
        return
    config.hook.pytest_deselected(items=mine)
    items[:] = [i for i in items if i not in mine]


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure to reach the engine is the same error
        raise RuntimeError(
            f"COMMIT_DOCKER_TESTS=1 but no Docker engine answers at "
            f"{os.environ.get('DOCKER_HOST', 'the default socket')}: {e} "
            "(run the container tests through `bash .ci/docker.sh`, which starts one)"
        ) from e
    return client


@pytest.fixture(scope="session")
def image(docker_client) -> str:
    import docker

    tag = component_image()
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound as e:
        raise RuntimeError(f"image {tag} is not built: run `make image` first") from e
    return tag


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A host folder the image's user (uid 10001) can write, for bind mounts."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chown(d, RUN_AS_USER, RUN_AS_GROUP)
    return d


def run(client, image: str, command: list[str] | str, **kwargs) -> str:
    """Run ``command`` in a fresh container with no network; its output (raises on exit≠0)."""
    kwargs.setdefault("network_mode", "none")
    out = client.containers.run(image, command, remove=True, stdout=True, stderr=True, **kwargs)
    return out.decode()
