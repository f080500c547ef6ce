"""One forward per distinct pre-processed image, faithfully.

An episode's score depends on two per-image computations of the net: the segmentation branch on
the query image (fc7s features) and the conditioning branch on each (support image, class) pair
(the classifier w, b). Both are kept and reused across episodes (in memory within a run, and on
disk between runs, e.g. between the 1-shot and the 5-shot run of a fold). Only the cheap head
(w . fc7s + b, deconvolution, crop, max over shots) runs per episode.

Bit-identity with the cache off: the very same per-image functions run in both modes, one image per
forward (the conditioning branch always sees a batch of one support, so a vector never depends on
which other supports shared its batch: CPU convolution kernels are chosen per batch shape and need
not be batch-invariant), and the stored tensors are the exact float32 outputs.

Pre-processing (file reading, the exact 2017 resize) runs in worker threads ahead of the model,
at most `lookahead` episodes ahead; numpy and PIL release the GIL for the heavy parts.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from reproduce.errors import ReproduceError
from reproduce.evaluation.provenance import code_version
from weights_convert.runtime.allocator import in_own_mapping, trim_when_free_exceeds
from weights_convert.files.atomic import atomic_path
from weights_convert.runtime.devices import explained_out_of_memory


TRIM_ABOVE_BYTES = 256 << 20  # free heap bytes above which they are returned to the system


class EpisodeLike(Protocol):
    query: str
    cls: int
    supports: Sequence[str]


class InputSource(Protocol):
    """What the cache needs from a data set: pre-processed net inputs and content digests."""

    def query_image(self, name: str) -> np.ndarray: ...             # (1,3,H,W) float32
    def support_pair(self, name: str, cls: int) -> tuple[np.ndarray, np.ndarray]: ...  # (3,224,224), (1,224,224)
    def image_digest(self, name: str) -> str: ...
    def mask_digest(self, name: str) -> str: ...


@dataclasses.dataclass(frozen=True)
class QueryUnit:
    """The segmentation branch on one query image: fc7s features."""
    image: str
    kind: ClassVar[str] = "query"


@dataclasses.dataclass(frozen=True)
class SupportUnit:
    """The conditioning branch on one (support image, class) pair: the classifier w, b."""
    image: str
    cls: int
    kind: ClassVar[str] = "support"


Unit = QueryUnit | SupportUnit


@dataclasses.dataclass
class CacheStats:
    query_forwards: int = 0
    support_forwards: int = 0
    query_disk_hits: int = 0
    support_disk_hits: int = 0
    query_memory_hits: int = 0
    support_memory_hits: int = 0
    evictions: int = 0
    disk_cache_full: bool = False  # the on-disk cache reached its size cap and stopped growing
    seconds: dict = dataclasses.field(default_factory=lambda: defaultdict(float))

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "seconds"}
        d["seconds"] = {k: round(v, 4) for k, v in sorted(self.seconds.items())}
        return d


class DiskStore:
    """Tensors under `root/<kind>/<key[:2]>/<key>.safetensors`, written atomically. Holds at most
    `max_bytes`: once full, new tensors are not stored (what is stored stays valid and is used)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.size = sum(f.stat().st_size for f in self.root.rglob("*.safetensors")) if max_bytes is not None else 0
        self.full = False

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def has(self, kind: str, key: str) -> bool:
        return self.path(kind, key).is_file()

    def load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        """The entry's tensors; None when absent, or damaged (unreadable, or bytes that are not the
        ones written: the digest stored with them differs), which is then removed to be recomputed."""
        from safetensors import SafetensorError, safe_open

        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                written = (fh.metadata() or {}).get("sha256")
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            return self._drop_damaged(path, f"unreadable: {exc}")
        if written != tensors_sha256(tensors):
            return self._drop_damaged(path, "its tensors do not match the digest written with them")
        return tensors

    def _drop_damaged(self, path: Path, why: str) -> None:
        print(f"WARNING: feature cache file {path} is damaged ({why}); recomputing it", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], about: dict) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        if self.max_bytes is not None:
            if self.size + sum(t.numel() * t.element_size() for t in tensors.values()) > self.max_bytes:
                self.full = True
                return
        path = self.path(kind, key)
        metadata = {"about": json.dumps(about, sort_keys=True), "sha256": tensors_sha256(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self.size += path.stat().st_size


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors' dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes and bytes): equal digests, equal outputs."""
    return tensors_sha256(module.state_dict())


def plan_uses(episodes: Sequence[EpisodeLike], start: int = 0) -> dict[Unit, list[int]]:
    """Unit -> episode indices (>= start, ascending) that need it."""
    uses: dict[Unit, list[int]] = defaultdict(list)
    for i in range(start, len(episodes)):
        for unit in episode_units(episodes[i]):
            if not uses[unit] or uses[unit][-1] != i:
                uses[unit].append(i)
    return uses


class FeatureProvider:
    """Query features and (w, b) per episode, each computed once per distinct image when `enabled`.

    Memory holds the units that a later episode still needs, up to `memory_bytes`; past that the
    unit needed farthest in the future is dropped (reloaded from disk or recomputed, both exact).
    With `enabled=False` every episode recomputes its units with the same functions (the reference
    for the bit-identity test and the benchmark)."""

    def __init__(self, model, source: InputSource, *, model_sha256: str, device: str | torch.device = "cpu",
                 enabled: bool = True, cache_dir: str | os.PathLike | None = None, workers: int = 2,
                 lookahead: int = 4, memory_bytes: int = 4 << 30, disk_bytes: int | None = None):
        self.model = model
        self.source = source
        self.device = torch.device(device)
        self.enabled = enabled
        self.disk = DiskStore(cache_dir, disk_bytes) if (enabled and cache_dir is not None) else None
        self.workers = max(1, int(workers))
        self.lookahead = max(1, int(lookahead))
        self.memory_bytes = int(memory_bytes)
        self.version = code_version(self.device)  # keys the cache with the model's and inputs' digests
        self.model_sha256 = model_sha256
        self.stats = CacheStats()
        self._memory: "OrderedDict[Unit, tuple]" = OrderedDict()
        self._memory_size = 0
        self._keys: dict[Unit, str] = {}

    # ------------------------------------------------------------------ keys
    @functools.cached_property
    def query_sha256(self) -> str:
        """Query features depend on the segmentation branch alone, so models that share it (a model
        before and after training only its conditioning branch) share them. Hashed when a disk key
        first needs it (0.4 s at full size), never in a run without a disk cache."""
        return module_digest(self.model.segmentation)

    def unit_key(self, unit: Unit) -> str:
        key = self._keys.get(unit)
        if key is None:
            if isinstance(unit, QueryUnit):
                parts = ["query", self.source.image_digest(unit.image), self.query_sha256]
            else:
                parts = ["support", self.source.image_digest(unit.image), self.source.mask_digest(unit.image),
                         str(unit.cls), self.model_sha256]
            parts.append(self.version)
            key = hashlib.sha256("|".join(parts).encode()).hexdigest()
            self._keys[unit] = key
        return key

    # ------------------------------------------------------------------ per-image computations
    def _prepare(self, unit: Unit):
        """Worker side: the pre-processed net input of a unit (numpy, no torch)."""
        t0 = time.perf_counter()
        if isinstance(unit, QueryUnit):
            out = (np.ascontiguousarray(self.source.query_image(unit.image), dtype=np.float32),)
        else:
            img, label = self.source.support_pair(unit.image, unit.cls)
            out = (np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(label, dtype=np.float32))
        return out, time.perf_counter() - t0

    def _compute(self, unit: Unit, prepared) -> tuple:
        """Model side: one image per forward, so the result never depends on batch company."""
        t0 = time.perf_counter()
        with torch.inference_mode(), explained_out_of_memory(f"{unit.kind} forward of {unit.image} "
                                                              f"({' x '.join(str(a.shape) for a in prepared)})"):
            if isinstance(unit, QueryUnit):
                (img,) = prepared
                x = to_device(img, self.device)
                if x.dim() == 3:
                    x = x.unsqueeze(0)
                value = (self.model.query_features(x, head_cells_only=True),)
                self.stats.query_forwards += 1
                phase = "query_forward"
            else:
                img, label = prepared
                x = to_device(img, self.device).reshape(1, *img.shape[-3:])
                y = to_device(label, self.device).reshape(1, 1, *label.shape[-2:])
                w, b = self.model.condition(x, y)
                value = (w[0], b[0])
                self.stats.support_forwards += 1
                phase = "support_forward"
        # On a GPU this is the launch time: no host synchronisation here (the episode's score is one).
        self.stats.seconds[phase] += time.perf_counter() - t0
        return value

    # ------------------------------------------------------------------ storage
    @staticmethod
    def _nbytes(value: tuple) -> int:
        return sum(int(t.numel()) * t.element_size() for t in value)

    def _disk_load(self, unit: Unit):
        if self.disk is None:
            return None
        t0 = time.perf_counter()
        kind = unit.kind
        got = self.disk.load(kind, self.unit_key(unit))
        self.stats.seconds["disk_read"] += time.perf_counter() - t0
        if got is None:
            return None
        needed = ("features",) if isinstance(unit, QueryUnit) else ("w", "b")
        if any(k not in got for k in needed):
            raise ReproduceError(f"feature cache file {self.disk.path(kind, self.unit_key(unit))} lacks "
                                 f"{', '.join(k for k in needed if k not in got)}; delete it to recompute")
        if isinstance(unit, QueryUnit):
            value = (got["features"].to(self.device),)
            self.stats.query_disk_hits += 1
        else:
            value = (got["w"].to(self.device), got["b"].to(self.device))
            self.stats.support_disk_hits += 1
        return value

    def _disk_save(self, unit: Unit, value: tuple) -> None:
        if self.disk is None:
            return
        t0 = time.perf_counter()
        if isinstance(unit, QueryUnit):
            tensors, about = {"features": value[0]}, {"image": unit.image}
        else:
            tensors, about = {"w": value[0], "b": value[1].reshape(())}, {"image": unit.image, "class": unit.cls}
        about.update({"model_sha256": self.model_sha256, "code_version": self.version})
        if isinstance(unit, QueryUnit):
            about["segmentation_sha256"] = self.query_sha256
        self.disk.save(unit.kind, self.unit_key(unit), tensors, about)
        self.stats.disk_cache_full = self.disk.full
        self.stats.seconds["disk_write"] += time.perf_counter() - t0

    def _on_disk(self, unit: Unit) -> bool:
        return self.disk is not None and self.disk.has(unit.kind, self.unit_key(unit))

    def _remember(self, unit: Unit, value: tuple, next_use: dict[Unit, int]) -> tuple:
        """Keep `value` (in mappings of its own: freed, it goes back to the system) and return it."""
        value = tuple(in_own_mapping(t) for t in value)
        self._memory[unit] = value
        self._memory_size += self._nbytes(value)
        while self._memory_size > self.memory_bytes and len(self._memory) > 1:
            # Belady: drop what is needed farthest ahead (never the unit just stored).
            victim = max((u for u in self._memory if u != unit), key=lambda u: next_use.get(u, 1 << 62))
            self._forget(victim)
            self.stats.evictions += 1
        return value

    def _forget(self, unit: Unit) -> None:
        value = self._memory.pop(unit, None)
        if value is not None:
            self._memory_size -= self._nbytes(value)

    # ------------------------------------------------------------------ the episode stream
    def iter_episodes(self, episodes: Sequence[EpisodeLike], start: int = 0,
                      extra: Callable[[int, EpisodeLike], object] | None = None
                      ) -> Iterator[tuple[int, EpisodeLike, torch.Tensor, torch.Tensor, torch.Tensor, object]]:
        """Yield (index, episode, query features (1,C,h,w), w (k,C), b (k,), extra(index, episode))
        for episodes[start:], in order. `extra` (e.g. the query label) runs in the worker pool too."""
        uses = plan_uses(episodes, start)
        cursor = {u: 0 for u in uses}  # position in uses[u] of the next use

        def next_use(u: Unit) -> int:
            pos, lst = cursor.get(u, 0), uses.get(u, ())
            return lst[pos] if pos < len(lst) else 1 << 62

        pending: dict[int, tuple[dict, cf.Future | None]] = {}  # episode -> its prefetch jobs
        pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="oslsm-prep")
        try:
            upcoming = iter(range(start, len(episodes)))
            for i in upcoming:
                self._submit(pool, pending, episodes, i, extra)
                if len(pending) >= self.lookahead:
                    break
            for i in range(start, len(episodes)):
                nxt = next(upcoming, None)
                if nxt is not None:
                    self._submit(pool, pending, episodes, nxt, extra)
                jobs, fut_extra = pending.pop(i)
                ep = episodes[i]
                values = {}
                for unit in episode_units(ep):
                    if unit not in values:
                        values[unit] = self._get(unit, jobs, pending, next_use)
                t0 = time.perf_counter()
                extra_value = fut_extra.result() if fut_extra is not None else None
                self.stats.seconds["wait_extra"] += time.perf_counter() - t0
                # Advance the use cursors, then free what no later episode needs.
                for unit in values:
                    cursor[unit] += 1
                    if self.enabled and next_use(unit) == 1 << 62:
                        self._forget(unit)
                # Free heap the forwards left behind goes back once it is large (a trimmed heap is
                # faulted in again by the next forward, so not after every one).
                trim_when_free_exceeds(TRIM_ABOVE_BYTES)
                yield (i, ep, *_stack(ep, values), extra_value)
        finally:
            # An interrupted run must not wait for prefetches it will never use.
            pool.shutdown(wait=True, cancel_futures=True)
            self._memory.clear()
            self._memory_size = 0

    def _submit(self, pool: cf.ThreadPoolExecutor, pending: dict, episodes: Sequence[EpisodeLike], i: int,
                extra: Callable | None) -> None:
        """Start pre-processing what episode i needs and nothing already held, on disk or queued."""
        ep = episodes[i]
        jobs: dict[Unit, cf.Future] = {}
        for unit in episode_units(ep):
            if unit in jobs:
                continue
            if self.enabled:
                already = any(unit in p[0] for p in pending.values())
                if already or unit in self._memory or self._on_disk(unit):
                    continue
            jobs[unit] = pool.submit(self._prepare, unit)
        fut_extra = pool.submit(extra, i, ep) if extra is not None else None
        pending[i] = (jobs, fut_extra)

    def _get(self, unit: Unit, jobs: dict, pending: dict, next_use) -> tuple:
        if self.enabled:
            value = self._memory.get(unit)
            if value is not None:
                if isinstance(unit, QueryUnit):
                    self.stats.query_memory_hits += 1
                else:
                    self.stats.support_memory_hits += 1
                return value
            value = self._disk_load(unit)
            if value is not None:
                return self._remember(unit, value, {u: next_use(u) for u in self._memory} | {unit: next_use(unit)})
        fut = jobs.get(unit)
        if fut is None and self.enabled:
            # Prepared for a later episode of the window (the first to need it collects it).
            for later_jobs, _ in pending.values():
                if unit in later_jobs:
                    fut = later_jobs.pop(unit)
                    break
        t0 = time.perf_counter()
        if fut is not None:
            prepared, prep_s = fut.result()
        else:
            prepared, prep_s = self._prepare(unit)
        self.stats.seconds["wait_prep"] += time.perf_counter() - t0
        self.stats.seconds["prep_worker"] += prep_s
        value = self._compute(unit, prepared)
        if self.enabled:
            self._disk_save(unit, value)
            value = self._remember(unit, value, {u: next_use(u) for u in self._memory} | {unit: next_use(unit)})
        return value


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """An input on the device: to a GPU from pinned memory without blocking the host."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _stack(ep: EpisodeLike, values: dict[Unit, tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query features (1,C,h,w), w (k,C) and b (k,) of an episode, supports in its order."""
    ws = [values[SupportUnit(s, int(ep.cls))] for s in ep.supports]
    return (values[QueryUnit(ep.query)][0], torch.stack([v[0] for v in ws]),
            torch.stack([v[1].reshape(()) for v in ws]))


def episode_units(ep: EpisodeLike) -> Iterable[Unit]:
    """The units an episode needs: its query, then each support."""
    yield QueryUnit(ep.query)
    for s in ep.supports:
        yield SupportUnit(s, int(ep.cls))
