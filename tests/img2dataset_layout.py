"""Write shards in img2dataset's webdataset output layout: NNNNN.tar (key.jpg, key.txt, key.json),
NNNNN.parquet (key, caption, url, status, ...) and NNNNN_stats.json."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_shards(root: Path, captions: Sequence[str], per_shard: int = 4, image_size: int = 32,
                 failed_every: int = 0, with_parquet: bool = True, images: Sequence[np.ndarray] | None = None
                 ) -> list[str]:
    """One sample per caption; returns the keys of the successfully "downloaded" samples (in the tars).

    ``failed_every=k`` marks every k-th sample as a failed download: it is in the parquet (status
    "failed_to_download") but not in the tar, as img2dataset does.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    keys = []
    for shard in range(0, len(captions), per_shard):
        shard_id = shard // per_shard
        rows = {"key": [], "caption": [], "url": [], "status": [], "error_message": []}
        with tarfile.open(root / f"{shard_id:05d}.tar", "w") as archive:
            for index in range(shard, min(shard + per_shard, len(captions))):
                key = f"{shard_id:05d}{index % per_shard:04d}"
                failed = failed_every and index % failed_every == failed_every - 1
                rows["key"].append(key)
                rows["caption"].append(captions[index])
                rows["url"].append(f"http://example.invalid/{index}.jpg")
                rows["status"].append("failed_to_download" if failed else "success")
                rows["error_message"].append("HTTP 404" if failed else None)
                if failed:
                    continue
                array = images[index] if images is not None else rng.integers(0, 255, (image_size, image_size, 3))
                buffer = io.BytesIO()
                Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
                _add(archive, f"{key}.jpg", buffer.getvalue())
                _add(archive, f"{key}.txt", captions[index].encode("utf-8"))
                _add(archive, f"{key}.json", json.dumps({"key": key, "url": rows["url"][-1],
                                                         "caption": captions[index], "status": "success"}).encode())
                keys.append(key)
        if with_parquet:
            pq.write_table(pa.table(rows), root / f"{shard_id:05d}.parquet")
        (root / f"{shard_id:05d}_stats.json").write_text(json.dumps({"count": len(rows["key"])}))
    return keys
