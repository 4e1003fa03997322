"""Training samples from img2dataset webdataset shards joined with parse_tags labels (by sample key or URL).

The stream is deterministic: ``streams = world_size * num_workers`` logical streams; with at least that many shards
each stream owns shards ``s % streams == stream``, otherwise samples are split by index. Every epoch a stream
shuffles its shards and passes samples through a seeded shuffle buffer; augmentation is seeded per sample. So the
position in the stream is just "how many samples this stream has produced", and resuming after ``N`` global
batches fast-forwards each stream by skipping raw samples (no image decoding), then rotates the workers so the
DataLoader's round-robin continues with the right one. Fast-forward reads the shards and checks each image at 1/8
scale (the same validity check training uses) but neither fully decodes nor augments.

A sample whose image cannot be decoded, or whose key has no label, is skipped and counted — never given another
sample's label (the reference's bug B3). Counts travel with the next batch (``skipped_corrupt``,
``skipped_unlabelled``) so the training log can report them.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import IterableDataset, get_worker_info

from ..tags.labels import LabelStore
from ..tags.parse import CJK_CHARACTERS
from .decode import decode_bytes

logger = logging.getLogger(__name__)

__all__ = ["NoTrainingSamplesError", "TagShardDataset", "collate_tag_batch", "list_shards"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_MAX_SKIP_WARNINGS = 20  # per stream; later skips are counted in the training log only
_PROBE_SAMPLES = 200  # samples of the first shard read at start to check that labels join at all


class NoTrainingSamplesError(RuntimeError):
    """The shards and labels give (almost) no usable sample: training would hang or learn from a sliver."""


def list_shards(paths: str | Sequence[str]) -> list[Path]:
    """Tar shards from directories (``*.tar``), glob patterns or files, sorted and de-duplicated."""
    if isinstance(paths, str | Path):
        paths = [paths]
    shards: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            shards.extend(sorted(path.glob("*.tar")))
        elif any(ch in str(item) for ch in "*?["):
            shards.extend(Path(match) for match in glob.glob(str(item)))
        elif path.is_file():
            shards.append(path)
        else:
            raise FileNotFoundError(f"training shards '{item}' not found")
    shards = sorted(set(shards))
    if not shards:
        raise FileNotFoundError(f"no .tar shards in {paths}")
    return shards


_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _undecodable(data: bytes | None) -> str | None:
    """Why an image cannot be used (None if it can). Cheap, and shared by training and fast-forward: JPEGs decode
    at 1/8 scale (DCT scaling); a header claiming more pixels than Pillow's decompression-bomb limit is refused."""
    if not data:
        return "no image"
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.draft("RGB", (max(pil.size[0] // 8, 1), max(pil.size[1] // 8, 1)))
            pil.load()
        return None
    except _DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def _raw_samples(shard: Path) -> Iterator[dict]:
    """Group tar members by sample key: ``{"key", "image": bytes|None, "txt": str, "json": dict}``; a damaged
    tar ends its own stream (the damage is logged) without stopping training."""
    current: dict | None = None
    try:
        with tarfile.open(shard, "r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = Path(member.name).name
                key, _, ext = name.partition(".")
                if current is not None and key != current["key"]:
                    yield current
                    current = None
                if current is None:
                    current = {"key": key, "image": None, "txt": "", "json": {}, "shard": str(shard)}
                data = archive.extractfile(member).read()
                ext = ext.lower()
                if ext in IMAGE_EXTENSIONS:
                    current["image"] = data
                elif ext == "txt":
                    current["txt"] = data.decode("utf-8", errors="replace")
                elif ext == "json":
                    try:
                        current["json"] = json.loads(data)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        current["json"] = {}
    except (tarfile.TarError, OSError, EOFError) as err:
        logger.warning("shard %s is damaged (%s); its remaining samples are skipped", shard, err)
    if current is not None:
        yield current


class TagShardDataset(IterableDataset):
    """Infinite, deterministic, resumable stream of ``{"image", "text", "tag_ids", "key"}`` training samples.

    Args:
        shards: tar shards (directories, globs or files) in img2dataset's webdataset layout.
        labels: ``labels.sqlite`` from ``tools/parse_tags.py merge``.
        transform: PIL image -> tensor (e.g. :func:`tagalign.data.transforms.train_transform`).
        tokenizer: captions -> token ids (open_clip tokenizer); None keeps the raw text.
        label_key: join labels on the sample ``"key"`` or on the ``"url"`` in the sample's json.
        drop_empty: drop samples whose tag list is empty (reference: keep them with a zero target).
        shuffle_buffer: samples held for shuffling (0 disables shuffling, shards are still shuffled).
        seed: base seed of shard order, buffer and augmentation.
        world_size, rank: data-parallel layout (default: torch.distributed's, else 1 and 0).
        max_consecutive_skips: stop with an error after this many skipped samples in a row (never hang).
        max_unlabelled_fraction: stop with an error when more than this fraction of the samples seen (after the
            first 200) has no label: a wrong ``label_key`` or labels from other data.
        skip_cjk: drop samples whose caption holds CJK characters (counted as ``skipped_cjk``), as the reference's
            loader does (spec §2; it then gave the next row's image the dropped row's tags, bug B3, which cannot
            happen here). Off by default: open_clip's tokenizer handles them, and the tags stay the sample's own.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        labels: str | Path,
        transform: Callable | None = None,
        tokenizer: Callable | None = None,
        label_key: str = "key",
        drop_empty: bool = False,
        shuffle_buffer: int = 2000,
        seed: int = 0,
        world_size: int | None = None,
        rank: int | None = None,
        max_consecutive_skips: int = 10_000,
        max_unlabelled_fraction: float = 0.5,
        skip_cjk: bool = False,
    ):
        super().__init__()
        if label_key not in ("key", "url"):
            raise ValueError(f"label_key must be 'key' or 'url', got '{label_key}'")
        self.shards = list_shards(shards)
        self.labels = LabelStore(labels)
        self.transform = transform
        self.tokenizer = tokenizer
        self.label_key = label_key
        self.drop_empty = drop_empty
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        if world_size is None or rank is None:
            import torch.distributed as dist

            distributed = dist.is_available() and dist.is_initialized()
            world_size = dist.get_world_size() if distributed else 1
            rank = dist.get_rank() if distributed else 0
        self.world_size, self.rank = world_size, rank
        self.max_consecutive_skips = max_consecutive_skips
        self.max_unlabelled_fraction = max_unlabelled_fraction
        self.skip_cjk = skip_cjk
        self._probe()
        self.batch_size = 1  # set by the loader builder; needed to turn batches into samples for resuming
        self.skip_batches = 0  # global batches already consumed (set on resume)

    def _diagnosis(self) -> str:
        label_keys = [row[0] for row in self.labels._db().execute("SELECT key FROM labels LIMIT 3")]
        other = "url" if self.label_key == "key" else "key"
        return (f"labels are joined on label_key='{self.label_key}'; {self.labels.path} holds keys like "
                f"{label_keys}. If the labels were parsed from other files (a .tsv is keyed by URL, img2dataset "
                f"shards by sample key), try label_key='{other}' or parse these shards themselves.")

    def _fail(self, stream: int, what: str, seen: int, unlabelled: int, corrupt: int) -> None:
        raise NoTrainingSamplesError(
            f"training data stream {stream} stops: {what} ({seen} samples read: {unlabelled} without a label, "
            f"{corrupt} with an unusable image). {self._diagnosis()}"
        )

    def _probe(self) -> None:
        """Read the first samples of the first shard: refuse at once if none of them joins a label."""
        samples = []
        for raw in _raw_samples(self.shards[0]):
            samples.append(raw)
            if len(samples) >= _PROBE_SAMPLES:
                break
        if not samples:
            return
        if self.label_key == "url" and not any(raw["json"].get("url") for raw in samples):
            raise NoTrainingSamplesError(
                f"label_key='url' but the samples of {self.shards[0]} carry no URL (no 'url' in their .json; the "
                f"pixparse/cc12m-wds mirror has none), so URL-keyed labels (e.g. the authors' released tags) cannot "
                f"be joined to them. Parse these shards' captions (`tools/parse_tags.py all {self.shards[0].parent}"
                f" ...`) and train with label_key='key', or use img2dataset shards, whose .json holds the URL."
            )
        if not any(self._label(raw) is not None for raw in samples):
            keys = [raw["key"] if self.label_key == "key" else raw["json"].get("url") for raw in samples[:3]]
            raise NoTrainingSamplesError(
                f"none of the first {len(samples)} samples of {self.shards[0]} has a label (their "
                f"{self.label_key}s look like {keys}). {self._diagnosis()}"
            )

    def __len__(self) -> int:
        """Labelled samples per rank: the nominal epoch length (the stream itself never ends)."""
        return max(len(self.labels) // self.world_size, 1)

    # ------------------------------------------------------------------ stream layout
    def _worker_layout(self) -> tuple[int, int]:
        info = get_worker_info()
        num_workers = info.num_workers if info else 1
        physical = info.id if info else 0
        # rotate so that the DataLoader's round-robin resumes with the worker that was next
        logical = (physical + self.skip_batches) % num_workers
        return logical, num_workers

    def _samples_to_skip(self, logical: int, num_workers: int) -> int:
        batches = self.skip_batches // num_workers + (1 if logical < self.skip_batches % num_workers else 0)
        return batches * self.batch_size

    def _stream_raw(self, stream: int, streams: int) -> Iterator[dict]:
        by_shard = len(self.shards) >= streams
        epoch = 0
        while True:
            rng = random.Random(f"{self.seed}-{epoch}-{stream}")
            owned = [s for i, s in enumerate(self.shards) if not by_shard or i % streams == stream]
            rng.shuffle(owned)
            index = mine = 0
            buffer: list[dict] = []
            for shard in owned:
                for raw in _raw_samples(shard):
                    if not by_shard:
                        index += 1
                        if (index - 1) % streams != stream:
                            continue
                    mine += 1
                    raw["epoch"] = epoch
                    if self.shuffle_buffer <= 1:
                        yield raw
                        continue
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(raw)
                        continue
                    pick = rng.randrange(len(buffer))
                    buffer[pick], raw = raw, buffer[pick]
                    yield raw
            rng.shuffle(buffer)
            yield from buffer
            if mine == 0:  # would loop forever without yielding
                raise NoTrainingSamplesError(
                    f"training data stream {stream} of {streams} (world size x data workers) owns no sample: the "
                    f"shards hold fewer samples than there are streams. Use fewer data workers.")
            epoch += 1

    def _label(self, raw: dict) -> list[int] | None:
        key = raw["key"] if self.label_key == "key" else raw["json"].get("url")
        return None if key is None else self.labels.get(str(key))

    def _decode(self, raw: dict, position: int, stream: int) -> dict:
        image = Image.fromarray(decode_bytes(raw["image"], source=f"sample {raw['key']}"))
        if self.transform is not None:
            state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
            sample_seed = hash((self.seed, stream, position)) % (2**31)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            torch.default_generator.manual_seed(sample_seed)  # the CPU generator only: torch.manual_seed would
            # also queue a CUDA reseed with a formatted stack trace, per sample, in data workers without CUDA
            try:
                image = self.transform(image)
            finally:
                random.setstate(state[0])
                np.random.set_state(state[1])
                torch.random.set_rng_state(state[2])
        text = raw["txt"]
        return {"image": image, "text": self.tokenizer([text])[0] if self.tokenizer else text, "key": raw["key"]}

    def __iter__(self) -> Iterator[dict]:
        logical, num_workers = self._worker_layout()
        stream = self.rank * num_workers + logical
        streams = self.world_size * num_workers
        to_skip = self._samples_to_skip(logical, num_workers)
        produced = 0
        corrupt = unlabelled = cjk = corrupt_logged = 0
        seen = seen_unlabelled = seen_corrupt = in_a_row = 0
        epoch, produced_in_epoch = 0, 0
        for raw in self._stream_raw(stream, streams):
            if raw["epoch"] != epoch:
                if produced_in_epoch == 0:
                    self._fail(stream, "a whole pass over this stream's samples gave none", seen, seen_unlabelled,
                               seen_corrupt)
                epoch, produced_in_epoch = raw["epoch"], 0
            seen += 1
            in_a_row += 1
            if in_a_row > self.max_consecutive_skips:
                self._fail(stream, f"{in_a_row - 1} samples in a row were skipped", seen, seen_unlabelled,
                           seen_corrupt)
            if seen >= _PROBE_SAMPLES and seen_unlabelled > self.max_unlabelled_fraction * seen:
                self._fail(stream, f"more than {self.max_unlabelled_fraction:.0%} of samples have no label", seen,
                           seen_unlabelled, seen_corrupt)
            tag_ids = self._label(raw)
            if tag_ids is None:
                unlabelled += produced >= to_skip
                seen_unlabelled += 1
                continue
            if self.drop_empty and not tag_ids:
                continue
            if self.skip_cjk and CJK_CHARACTERS.search(raw["txt"]):
                cjk += produced >= to_skip
                continue
            reason = _undecodable(raw["image"])
            if reason is not None:
                corrupt += produced >= to_skip
                seen_corrupt += 1
                if produced >= to_skip and corrupt_logged < _MAX_SKIP_WARNINGS:
                    corrupt_logged += 1
                    logger.warning("skipping sample %s of %s: %s%s", raw["key"], raw["shard"], reason,
                                   " (further skips are only counted)" if corrupt_logged == _MAX_SKIP_WARNINGS else "")
                continue
            in_a_row = 0
            produced_in_epoch += 1
            if produced < to_skip:  # fast-forward: no full decode, no augmentation
                produced += 1
                continue
            try:
                sample = self._decode(raw, produced, stream)
            except _DECODE_ERRORS as err:
                # passed the cheap check but not the full decode (rare): skipped, counted; a later resume may
                # be one sample off in this stream
                corrupt += 1
                logger.debug("skipping sample %s: undecodable image (%s)", raw["key"], err)
                continue
            produced += 1
            sample.update(tag_ids=tag_ids, skipped_corrupt=corrupt, skipped_unlabelled=unlabelled, skipped_cjk=cjk)
            corrupt = unlabelled = cjk = 0
            yield sample


def collate_tag_batch(samples: Sequence[dict]) -> dict:
    """Stack images and tokens; keep tag ids as lists; sum the skip counters."""
    batch = {
        "images": torch.stack([s["image"] for s in samples]),
        "tag_ids": [list(s["tag_ids"]) for s in samples],
        "keys": [s["key"] for s in samples],
        "skipped_corrupt": sum(s["skipped_corrupt"] for s in samples),
        "skipped_unlabelled": sum(s["skipped_unlabelled"] for s in samples),
        "skipped_cjk": sum(s.get("skipped_cjk", 0) for s in samples),
    }
    texts = [s["text"] for s in samples]
    batch["text_tokens"] = torch.stack(texts) if torch.is_tensor(texts[0]) else texts
    return batch
