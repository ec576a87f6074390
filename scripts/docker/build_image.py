#!/usr/bin/env python3
"""Build the component image (``Dockerfile``) with this machine's pip mirrors.

Why a script and not a bare ``docker build``: the build stage runs ``pip install`` inside a
container, and pip there knows nothing of this machine's configuration (``pip config list``:
local ``file://`` indexes, a ``find-links`` folder with the CPU torch wheel, a constraints
file, a CA bundle for a TLS-intercepting proxy). This script reads that configuration,
serves every local piece (folders, constraint files, the CA bundle) over HTTP on
``127.0.0.1`` for the length of the build, and passes the resulting URLs as build
arguments to ``docker build --network host``. They are arguments of the build stage only:
the final image holds no mirror URL, no certificate and no pip configuration.

Only the standard library: it runs with any ``python3`` (``make image``, ``.ci/docker.sh``).

    python3 scripts/docker/build_image.py [--tag commit-mlops:0.1.0] [--base IMAGE]
        [--variant cpu|cuda] [--build-arg K=V ...]
"""

from __future__ import annotations

import argparse
import http.server
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

REPO = Path(__file__).resolve().parents[2]
#: pip configuration keys that say where packages come from, in the build's env-var names.
KEYS = {
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "find-links": "PIP_FIND_LINKS",
    "trusted-host": "PIP_TRUSTED_HOST",
    "constraint": "PIP_CONSTRAINT",
    "cert": "PIP_CERT",
}
#: loopback port of the mirror during the build ($COMMIT_PIP_MIRROR_PORT overrides)
MIRROR_PORT = int(os.environ.get("COMMIT_PIP_MIRROR_PORT", "38517"))
#: later scopes override earlier ones, as in pip itself (the environment wins).
SCOPE_ORDER = ("global", "user", "site", "env")


def default_tag() -> str:
    sys.path.insert(0, str(REPO))
    from pipelines.platform import DEFAULT_IMAGE  # only names, no kfp import

    return os.environ.get("COMMIT_IMAGE", DEFAULT_IMAGE)


def pip_settings() -> dict[str, list[str]]:
    """The effective source settings of this machine's pip (``pip config list -v`` semantics).

    ``pip config list`` prints ``<variant>.<key>='<value>'`` for the config files (sections
    ``global`` and ``install``) and ``:env:.<key>='<value>'`` for ``PIP_*`` variables;
    multi-valued keys are whitespace-separated.
    """
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, sep, raw = line.partition("=")
        if not sep:
            continue
        section, _, key = name.rpartition(".")
        if key not in KEYS or section not in (":env:", "global", "install"):
            continue
        scope = "env" if section == ":env:" else "global"
        found.setdefault(key, {})[scope] = raw.strip().strip("'\"")
    # Variables that pip config list does not show when they are set after pip started.
    for key, var in KEYS.items():
        if os.environ.get(var):
            found.setdefault(key, {})["env"] = os.environ[var]
    settings: dict[str, list[str]] = {}
    for key, by_scope in found.items():
        for scope in SCOPE_ORDER:
            if scope in by_scope:
                settings[key] = by_scope[scope].split()
    return settings


def local_path(value: str) -> Path | None:
    """The local file or folder ``value`` names (``file://`` URL or a plain path), else None."""
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and value.startswith("/"):
        return Path(value)
    return None


class Mirror:
    """Serves registered local paths over HTTP on 127.0.0.1, at their own absolute paths.

    An index folder is served with its parent, so the relative links of a PEP 503 ``simple/``
    tree (``../../files/x.whl``) resolve; a plain folder of wheels gets a directory listing,
    which pip reads as ``find-links``. Nothing outside the registered paths is served.
    """

    def __init__(self) -> None:
        self.allowed: list[Path] = []
        allowed = self.allowed

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                target = Path(os.path.normpath(unquote(urlparse(path).path)))
                if any(target == root or root in target.parents for root in allowed):
                    return str(target)
                return "/nonexistent"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        # A fixed port when it is free: the URLs are build arguments, and the same arguments
        # let Docker reuse the dependency layer on the next build (a random port never would).
        try:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", MIRROR_PORT), Handler)
        except OSError:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: Path, index: bool = False) -> str:
        path = path.resolve()
        self.allowed.append(path.parent if index else path)
        suffix = "/" if path.is_dir() else ""
        return f"http://127.0.0.1:{self.port}{quote(str(path))}{suffix}"

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def build_args(settings: dict[str, list[str]], mirror: Mirror) -> dict[str, str]:
    """Build arguments that give pip in the build stage the same sources as pip here."""
    args: dict[str, str] = {}
    served = False
    for key, values in settings.items():
        if key == "cert":
            path = local_path(values[0]) if values else None
            if path and path.is_file():
                args["PIP_CERT_URL"] = mirror.url(path)
                served = True
            continue
        urls = []
        for value in values:
            path = local_path(value)
            if path is None:
                urls.append(value)
            elif path.exists():
                urls.append(mirror.url(path, index=key.endswith("index-url")))
                served = True
            else:
                print(f"build_image: skipping {key} {value}: it does not exist", file=sys.stderr)
        if urls:
            args[KEYS[key]] = " ".join(urls)
    if served:
        hosts = args.get("PIP_TRUSTED_HOST", "").split()
        args["PIP_TRUSTED_HOST"] = " ".join([*hosts, f"127.0.0.1:{mirror.port}"])
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default=None, help="image tag (default $COMMIT_IMAGE or platform's)")
    p.add_argument("--base", help="BASE_IMAGE build argument (default: the Dockerfile's)")
    p.add_argument("--variant", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--docker", default=os.environ.get("DOCKER", "docker"))
    p.add_argument(
        "--no-host-pip",
        action="store_true",
        help="do not pass this machine's pip mirrors (a machine with plain PyPI access)",
    )
    a = p.parse_args(argv)
    tag = a.tag or default_tag()

    with Mirror() as mirror:
        args: dict[str, str] = {"VARIANT": a.variant}
        if not a.no_host_pip:
            args.update(build_args(pip_settings(), mirror))
            # The host's indexes decide where torch comes from (as for `make install`).
            args["TORCH_INDEX_URL"] = "none"
        if a.base:
            args["BASE_IMAGE"] = a.base
        for kv in a.build_arg:
            k, sep, v = kv.partition("=")
            if not sep:
                p.error(f"--build-arg {kv!r}: expected KEY=VALUE")
            args[k] = v
        cmd = [a.docker, "build", "--network", "host", "-t", tag, "-f", str(REPO / "Dockerfile")]
        for k, v in args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        cmd.append(str(REPO))
        print("build_image:", shlex.join(cmd), flush=True)
        env = dict(os.environ)
        env.setdefault("DOCKER_BUILDKIT", "0")  # the legacy builder: no buildx plugin needed
        t0 = time.monotonic()
        rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        print(f"build_image: docker build failed (exit {rc})", file=sys.stderr)
        return rc
    print(f"build_image: built {tag} in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
