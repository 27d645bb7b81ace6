"""Helpers shared by the service tests (images, base64, array decoding, waiting for models)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image


def png(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", **save)
    return buf.getvalue()


def encode(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def grey_with_patch(h: int = 56, w: int = 84, at: tuple[int, int] = (1, 2), value: int = 120) -> np.ndarray:
    """A flat grey image whose patch ``at`` (row, col of the 14-pixel grid) is white: the one defect token."""
    array = np.full((h, w, 3), value, np.uint8)
    y, x = at
    array[y * 14:(y + 1) * 14, x * 14:(x + 1) * 14] = 255
    return array


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def decode_array(value) -> np.ndarray:
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["data"]), dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])
    return np.asarray(value)


def wait_loaded(app, timeout: float = 20.0) -> None:
    service = app.state.service
    end = time.monotonic() + timeout
    while not service.registry.all_loaded():
        if time.monotonic() > end:
            raise TimeoutError("models did not load")
        time.sleep(0.01)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait on the event loop until ``condition()`` holds: ordering without guessing a sleep on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def running_server(app, timeout: float = 20.0):
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; yields ``host:port``."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        wait_loaded(app, timeout)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
