"""Batches of a cache dataset: threads read clips straight into a small ring of reusable batch buffers.

Why not a torch DataLoader with worker processes: a 10 s clip is 882 kB of int16, and reading it from the cache
is a ~0.2 ms copy out of the page cache. Handing a batch from a worker process to the trainer costs more than
reading it: the batch is copied into a fresh shared-memory segment whose pages are then faulted in on both sides
(benchmarks/cache.json, cached_train_frames_worker_processes). Threads share the process instead: uncompressed
waveforms are read with os.preadv outside the GIL (direct_read.py), JPEG decoding runs outside it too, and the
buffers are allocated (pinned for CUDA) once per epoch, not once per batch.
Augmentation is not done here: each clip carries its plan (transforms.draw_plan) and the dataset's finish()
applies the plans to the whole batch on the training device.

Contract: a yielded batch's tensors are views of ring buffers; they stay valid until the batch after next is
taken. Consumers finish (or copy) a batch before taking more than one more: the Trainer and evaluation do.

The dataset protocol (AudioCacheDataset): batch_buffers(batch_size, pin_memory) -> dict of empty tensors,
read_item(position, buffers, slot), batch_labels(positions) -> dict of the small per-clip fields.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset


def batches(dataset, positions: Iterable[int], batch_size: int, *, threads: int = 0, prefetch: int = 2,
            pin_memory: bool = False) -> Iterator[dict]:
    """Batches of `dataset` at `positions` (in order, the last one possibly short). threads=0 reads in the
    calling thread; otherwise `threads` threads read the clips of the next `prefetch` batches while the caller
    works on the current one."""
    if batch_size < 1 or prefetch < 1:
        raise ValueError(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}")
    positions = list(positions)
    chunks = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    # in use at once: the batch before the current one (a device copy may still read it), the current one,
    # and `prefetch` being read
    ring = [dataset.batch_buffers(batch_size, pin_memory) for _ in range(min(len(chunks), prefetch + 2))]

    def assemble(j: int) -> dict:
        n = len(chunks[j])
        return {**{k: v[:n] for k, v in ring[j % len(ring)].items()}, **dataset.batch_labels(chunks[j])}

    if threads == 0:
        for j, chunk in enumerate(chunks):
            for slot, pos in enumerate(chunk):
                dataset.read_item(pos, ring[j % len(ring)], slot)
            yield assemble(j)
        return

    pool = ThreadPoolExecutor(threads, thread_name_prefix="cache-loader")
    pending: deque[list[Future]] = deque()

    def read_slots(buffers: dict, slots: range, chunk: list[int]) -> None:
        for slot in slots:
            dataset.read_item(chunk[slot], buffers, slot)

    def submit(j: int) -> None:
        # one task per thread and batch, each a contiguous run of slots: a task per clip cost the pool's
        # hand-off (~40 us) per clip, more than reading a cached clip (benchmarks/cache.json)
        buffers, chunk = ring[j % len(ring)], chunks[j]
        bounds = [len(chunk) * k // threads for k in range(threads + 1)]
        pending.append([pool.submit(read_slots, buffers, range(a, b), chunk)
                        for a, b in zip(bounds, bounds[1:]) if b > a])

    try:
        for j in range(min(prefetch, len(chunks))):
            submit(j)
        for j in range(len(chunks)):
            for future in pending.popleft():
                future.result()  # a reader's error surfaces here, in order
            if j + prefetch < len(chunks):
                submit(j + prefetch)  # reuses the buffers of batch j - 2
            yield assemble(j)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # also when the consumer stops early


def model_batches(dataset: Dataset, order: Iterable[int], batch_size: int, device: torch.device, *,
                  workers: int = 0, collate: Callable | None = None,
                  generator: torch.Generator | None = None) -> Iterator[dict]:
    """Batches of `dataset` in `order`, on `device` and ready for the model. A cache dataset (read_item/finish) is
    read by batches() with `workers` threads and finished on the device; any other Dataset goes through a torch
    DataLoader with `workers` processes and `collate` (`generator` seeds its workers)."""
    pin = device.type == "cuda"
    if hasattr(dataset, "read_item"):
        for batch in batches(dataset, order, batch_size, threads=workers, pin_memory=pin):
            yield dataset.finish(to_device(batch, device))
        return
    for batch in DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate,
                            generator=generator, persistent_workers=False, pin_memory=pin):
        yield to_device(batch, device)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to `device` (asynchronously from pinned memory); lists and numbers stay."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
