"""A real S3 for the storage tests: ``moto_server`` on a free loopback port, and a TCP
proxy in front of it that injects the faults a real store has (an outage answering 503
and dropping open connections, slow requests, a canned error such as rejected
credentials). A proxy is used instead of stopping moto because moto keeps its buckets in
memory: a restarted moto would be a different, empty store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from commit_train.local_servers import free_port, kill_group, start_moto_server

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0123456",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-do-not-print-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")


class MotoServer:
    """``moto_server -H 127.0.0.1 -p <port>`` in its own process group."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = start_moto_server(self.port, log)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        kill_group(self.proc)


def _error_response(status: int, reason: str, code: str) -> bytes:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


class FaultProxy:
    """Forwards TCP to ``target_port``; :meth:`fail_for` simulates an outage."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.fail_until = 0.0
        self.canned: tuple[int, str, str] | None = None
        self.request_delay = 0.0
        self.requests = 0
        self.failures = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def fail_for(self, seconds: float) -> None:
        """Answer 503 to every request for ``seconds`` and drop connections in flight."""
        self.fail_until = time.monotonic() + seconds
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _reject(self, conn: socket.socket, status: int, reason: str, code: str) -> None:
        conn.settimeout(5)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.failures += 1
            conn.sendall(_error_response(status, reason, code))
        conn.close()

    def _handle(self, conn: socket.socket) -> None:
        if self.canned:
            return self._reject(conn, *self.canned)
        if time.monotonic() < self.fail_until:
            return self._reject(conn, 503, "Service Unavailable", "ServiceUnavailable")
        try:
            up = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return
        with self._lock:
            self._open.update((conn, up))
        threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()
        self._pump(conn, up, True)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and data.startswith(_METHODS):
                    self.requests += 1
                    if self.request_delay:
                        time.sleep(self.request_delay)
                    if time.monotonic() < self.fail_until:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.difference_update((src, dst))
