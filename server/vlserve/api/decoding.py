"""Reading a request's images under two budgets: its own (`max_request_pixels`, checked
from the images' headers before anything is decompressed) and the server's
(`max_decode_pixels` being decoded at once: a request whose next image does not fit waits).
Each image is decoded and resized on its own, so at most one full-size copy per image in
flight exists, and a request whose client left stops at the next image."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ..engine.images import image_size
from ..errors import ImageTooLargeError
from .inputs import images_of


class PixelBudget:
    """A counting semaphore in pixels (event-loop side only)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self, n: int) -> None:
        while self.used + n > self.total:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters:  # each re-checks whether it fits now
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True)
class EncodedImages:
    """A request's images as sent, checked from their headers (format, size)."""

    blobs: list[bytes]
    sizes: list[int]  # pixels each decodes to
    param: str

    @property
    def names(self) -> list[str]:
        return [f"{self.param}[{i}]" for i in range(len(self.blobs))]


async def read_images(gw, refs: list[str] | None, uploads: dict, param: str) -> EncodedImages | None:
    """Bytes of every image and their headers' checks, before the request's deadline
    starts counting: a bad image is always 4xx, whatever `timeout_s` says."""
    if not refs:  # absent or empty: the task says whether it needs images
        return None
    settings = gw.settings
    blobs = await images_of(refs, settings, uploads, param)
    names = [f"{param}[{i}]" for i in range(len(blobs))]
    sizes = await gw.in_thread(lambda: [image_size(b, max_pixels=settings.max_pixels, param=n)
                                        for b, n in zip(blobs, names)])
    if sum(sizes) > settings.max_request_pixels:
        raise ImageTooLargeError(f"the images hold {sum(sizes)} pixels together; the limit per request is "
                                 f"{settings.max_request_pixels}", param=param)
    return EncodedImages(blobs, sizes, param)


async def decode_images(gw, model, images: EncodedImages):
    """The model's pixels (B, 3, S, S), each image decoded in the pool within the budget."""
    engine = model.engine

    async def one(blob: bytes, name: str, n: int):
        await gw.pixel_budget.acquire(n)
        try:
            return await gw.in_thread(engine.pixels, [blob], [name])
        finally:
            gw.pixel_budget.release(n)

    tasks = [asyncio.ensure_future(one(b, name, n)) for b, name, n in zip(images.blobs, images.names, images.sizes)]
    try:
        parts = await asyncio.gather(*tasks)
    finally:  # one image failed: the others stop too
        for task in tasks:
            task.cancel()
    gw.metrics.images_processed(model.name, len(parts))
    return parts[0] if len(parts) == 1 else await gw.in_thread(engine.stack_pixels, list(parts))
