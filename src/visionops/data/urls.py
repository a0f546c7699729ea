"""URL manifests in the face-service layout: ``name,url`` with optional ``x1,y1,x2,y2`` and ``md5``.

Each image is downloaded once into the data root (timeout, bounded retries with backoff, a few
concurrent connections, a size cap), its MD5 checked when given, and placeholder answers rejected:
non-image content, tiny images, and the same content served for many URLs (a "photo not found" image).
Every rejected row is recorded with its reason; ingest fails only above ``data.max_rejected_fraction``.
"""

from __future__ import annotations

import csv
import hashlib
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from visionops.core.config import DataConfig
from visionops.core.constants import IMAGE_FORMATS
from visionops.core.storage import data_root, fingerprint
from visionops.data.fetch import Deadline, HostPolicy, Refused, Transient, download
from visionops.data.sources import Item, SourceError, normalize_label

_BOX = ("x1", "y1", "x2", "y2")
_BACKOFF_S = 0.2  # first retry waits this long, then twice as long each time


@dataclass(frozen=True)
class UrlRow:
    row: int  # line in the CSV (header = 1)
    name: str
    url: str
    box: tuple[int, int, int, int] | None
    md5: str | None


def download_dir(data: DataConfig) -> Path:
    """Downloads of one URL manifest live under ``<data_root>/downloads/<manifest key>/``."""
    root = data_root()
    if "://" in root and not root.startswith("file://"):
        raise SourceError(
            f"URL ingest downloads to a local data root; VISIONOPS_DATA_ROOT is {root}"
        )
    return (
        Path(root.removeprefix("file://"))
        / "downloads"
        / fingerprint(str(Path(data.path).resolve()))[:16]
    )


def read_url_manifest(path: str | Path) -> tuple[list[UrlRow], list[dict[str, Any]]]:
    """Rows to fetch, and rows rejected while reading (bad scheme, bad rectangle)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"URL manifest not found: {path}")
    rows: list[UrlRow] = []
    rejected: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        if not {"name", "url"} <= fields:
            raise SourceError(
                f"{path}: a URL manifest needs columns name,url; found {reader.fieldnames}"
            )
        for row_no, rec in enumerate(reader, start=2):
            name = normalize_label(rec.get("name")) or ""
            url = (rec.get("url") or "").strip()
            reason = None
            if urlsplit(url).scheme not in ("http", "https"):
                reason = f"scheme of {url!r} is not http or https"
            box = None
            if (
                reason is None
                and set(_BOX) <= fields
                and any((rec.get(k) or "").strip() for k in _BOX)
            ):
                try:
                    box = tuple(int(float(rec[k])) for k in _BOX)
                    if not (box[2] > box[0] >= 0 and box[3] > box[1] >= 0):
                        reason = f"face rectangle {box} is not x1<x2, y1<y2 (non-negative)"
                except (TypeError, ValueError):
                    reason = f"face rectangle {[rec.get(k) for k in _BOX]} is not four numbers"
            if reason:
                rejected.append({"row": row_no, "name": name, "url": url, "reason": reason})
            else:
                md5 = (rec.get("md5") or "").strip().lower() or None
                rows.append(UrlRow(row_no, name, url, box, md5))
    return rows, rejected


def fetch(
    url: str,
    target: Path,
    *,
    timeout: float,
    retries: int,
    max_bytes: int,
    policy: HostPolicy | None = None,
) -> str | None:
    """Download ``url`` to ``target``; None on success, else why not. Retries only what may pass later.

    ``timeout`` bounds each try as a whole (``visionops.data.fetch``: every redirect hop and read),
    so a worker is held at most ``(retries + 1) * timeout`` plus the backoff; a refused address or
    scheme and a 4xx answer are not retried."""
    policy = policy or HostPolicy()
    reason = "not tried"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1))
        try:
            answer = download(
                url, timeout=timeout, max_bytes=max_bytes, policy=policy, accept=_image_type
            )
        except Refused as exc:
            return f"refused: {exc}"
        except (Deadline, Transient) as exc:
            reason = str(exc)
            continue
        if answer.status >= 300:
            reason = f"dead link: HTTP {answer.status}"
            if answer.status < 500:
                return reason  # 4xx (or a redirect without a target) will not change on a retry
            continue
        if answer.too_large:
            return f"larger than data.max_download_bytes={max_bytes}"
        if answer.body is None:
            return f"not an image: Content-Type {answer.content_type or 'missing'}"
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(answer.body)
        tmp.replace(target)
        return None
    return f"{reason} (after {retries + 1} tries)"


def _image_type(kind: str) -> bool:
    return kind.startswith("image/") or kind == "application/octet-stream"


def _check_image(path: Path, min_side: int, max_pixels: int) -> str | None:
    """Why the downloaded file is not a usable image, or None. The pixel count is read from the
    header and checked before anything is decoded: a small file claiming 10000x10000 pixels is
    refused without allocating them."""
    try:
        with warnings.catch_warnings():
            # Pillow's own limit would only warn up to twice its size: data.max_pixels decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                if img.width * img.height > max_pixels:
                    path.unlink(missing_ok=True)
                    return (
                        f"{img.width}x{img.height} = {img.width * img.height} pixels "
                        f"> data.max_pixels={max_pixels} (not decoded)"
                    )
                if min(img.size) < min_side:
                    return (
                        f"tiny image {img.width}x{img.height} "
                        f"(< data.min_download_side={min_side}): a placeholder"
                    )
                img.load()  # a truncated or corrupt body fails here
    except Image.DecompressionBombError as exc:  # past twice Pillow's limit: refused in open
        path.unlink(missing_ok=True)
        return f"{exc} (not decoded)"
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the answer
        return f"not an image: {type(exc).__name__}"
    return None


def ingest_urls(data: DataConfig, dest: Path) -> tuple[list[Item], dict[str, Any]]:
    """Download a URL manifest into ``dest``; return the usable items and the ingest report."""
    rows, rejected = read_url_manifest(data.path)
    dest.mkdir(parents=True, exist_ok=True)
    policy = HostPolicy.from_entries(data.allow_private_hosts)

    def one(row: UrlRow) -> tuple[UrlRow, Path, str | None]:
        suffix = Path(urlsplit(row.url).path).suffix[:6]
        target = dest / (hashlib.sha256(row.url.encode()).hexdigest()[:20] + suffix)
        if not target.exists():  # downloaded by an earlier ingest: not fetched again
            reason = fetch(
                row.url,
                target,
                timeout=data.download_timeout_s,
                retries=data.download_retries,
                max_bytes=data.max_download_bytes,
                policy=policy,
            )
            if reason:
                return row, target, reason
        digest = hashlib.md5(target.read_bytes()).hexdigest()  # noqa: S324 - the manifest's checksum
        if row.md5 and digest != row.md5:
            target.unlink()
            return row, target, f"MD5 mismatch: manifest {row.md5}, downloaded {digest}"
        return row, target, _check_image(target, data.min_download_side, data.max_pixels)

    with ThreadPoolExecutor(data.download_workers) as pool:
        results = list(pool.map(one, rows))
    ok = [(row, target) for row, target, reason in results if reason is None]
    rejected += [
        {"row": r.row, "name": r.name, "url": r.url, "reason": reason}
        for r, _, reason in results
        if reason is not None
    ]
    # The same bytes behind many URLs: a stock "no photo" answer, not the person.
    content = {target: hashlib.sha256(target.read_bytes()).hexdigest() for _, target in ok}
    shared = Counter(content.values())
    items = []
    for row, target in ok:
        n = shared[content[target]]
        if n >= data.placeholder_repeats:
            rejected.append(
                {
                    "row": row.row,
                    "name": row.name,
                    "url": row.url,
                    "reason": f"placeholder: the same content is served for {n} URLs",
                }
            )
        else:
            items.append(Item(str(target.resolve()), row.name or None, row.box))
    total = len(rows) + sum(
        1 for r in rejected if r["reason"].startswith(("scheme", "face rectangle"))
    )
    fraction = len(rejected) / total if total else 1.0
    report = {
        "rows": total,
        "downloaded": len(items),
        "rejected": sorted(rejected, key=lambda r: r["row"]),
        "rejected_fraction": round(fraction, 4),
        "max_rejected_fraction": data.max_rejected_fraction,
    }
    if fraction > data.max_rejected_fraction or not items:
        shown = "; ".join(f"row {r['row']}: {r['reason']}" for r in report["rejected"][:5])
        raise SourceError(
            f"{data.path}: {len(rejected)} of {total} URL rows rejected ({fraction:.0%} > "
            f"data.max_rejected_fraction={data.max_rejected_fraction:.0%}); first: {shown}"
        )
    return items, report
