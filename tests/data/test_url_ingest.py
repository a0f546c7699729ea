"""URL manifests (face-service layout) against a real local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionops.core.config import DataConfig
from visionops.data import urls
from visionops.data.sources import SourceError
from visionops.data.urls import ingest_urls

pytestmark = (
    pytest.mark.integration
)  # an HTTP server (in a thread of this process), reached over TCP

# The test server is on the loopback address, which URL ingest refuses unless it is allow-listed
# (tests/data/test_attacks_url_ingest.py shows the refusals).
LOCAL = ["127.0.0.1"]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """Serves ``routes`` (path -> (status, content type, body, delay_s)) and counts requests per path."""

    def __init__(self, routes: dict[str, tuple[int, str, bytes, float]]):
        self.routes, self.hits = routes, Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits[self.path] += 1
                status, kind, body, delay = outer.routes.get(
                    self.path, (404, "text/plain", b"gone", 0.0)
                )
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(corpus) -> Iterator[Server]:
    placeholder = _png(np.full((64, 64), 200, np.uint8))
    routes = {
        f"/ada/{i}.png": (200, "image/png", _png(corpus.textured(i, 48)), 0.0) for i in range(6)
    }
    routes |= {
        f"/bob/{i}.png": (200, "image/png", _png(corpus.textured(50 + i, 48)), 0.0)
        for i in range(6)
    }
    routes |= {f"/missing/{i}.jpg": (200, "image/png", placeholder, 0.0) for i in range(3)}
    routes["/html.jpg"] = (200, "text/html", b"<html>not found</html>", 0.0)
    routes["/tiny.png"] = (200, "image/png", _png(np.zeros((4, 4), np.uint8)), 0.0)
    routes["/slow.png"] = (200, "image/png", _png(corpus.textured(99, 48)), 3.0)
    routes["/oops.png"] = (500, "text/plain", b"try later", 0.0)
    srv = Server(routes)
    yield srv
    srv.httpd.shutdown()


def _write(tmp_path: Path, server: Server, extra_rows: list[str], md5_ok: bool = True) -> Path:
    good = server.routes["/ada/0.png"][2]
    rows = ["name,url,x1,y1,x2,y2,md5"]
    rows += [f"Ada,{server.url}/ada/{i}.png,,,,," for i in range(1, 6)]
    rows += [f"Bob,{server.url}/bob/{i}.png,4,4,40,40," for i in range(6)]
    md5 = hashlib.md5(good).hexdigest() if md5_ok else "0" * 32  # noqa: S324
    rows.append(f"Ada,{server.url}/ada/0.png,,,,,{md5}")
    path = tmp_path / "urls.csv"
    path.write_text("\n".join(rows + extra_rows) + "\n")
    return path


BAD_ROWS = [
    "Ada,{u}/dead.png,,,,,",
    "Ada,{u}/missing/0.jpg,,,,,",
    "Bob,{u}/missing/1.jpg,,,,,",
    "Bob,{u}/missing/2.jpg,,,,,",
    "Ada,{u}/html.jpg,,,,,",
    "Bob,{u}/tiny.png,,,,,",
    "Bob,{u}/slow.png,,,,,",
    "Ada,{u}/oops.png,,,,,",
    "Ada,ftp://example.org/x.png,,,,,",
    "Ada,file:///etc/passwd,,,,,",
]


def test_bad_rows_are_rejected_with_reasons(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write(tmp_path, server, [r.format(u=server.url) for r in BAD_ROWS], md5_ok=False)
    data = DataConfig(
        source="urls",
        path=str(manifest),
        allow_private_hosts=LOCAL,
        download_timeout_s=1.0,
        download_retries=1,
        max_rejected_fraction=0.6,
        min_download_side=16,
    )
    # Every download goes out with data.download_timeout_s (the real one, recorded on the way).
    timeouts: list[tuple[str, float]] = []
    real_download = urls.download

    def download(url: str, *, timeout: float, **kwargs):  # noqa: ANN202
        timeouts.append((url, timeout))
        return real_download(url, timeout=timeout, **kwargs)

    monkeypatch.setattr(urls, "download", download)
    items, report = ingest_urls(data, tmp_path / "downloads")
    # The slow answer (3 s) cost two tries of 1 s each: the timeout given, the retries bounded.
    assert {t for _, t in timeouts} == {1.0}
    assert server.hits["/slow.png"] == 2
    assert len(timeouts) == sum(server.hits.values())  # nothing else fetched behind the record

    reasons = {
        r["url"].rsplit("/", 2)[-1] if "://127" in r["url"] else r["url"]: r["reason"]
        for r in report["rejected"]
    }
    assert reasons["dead.png"] == "dead link: HTTP 404"
    assert reasons["0.png"].startswith("MD5 mismatch: manifest 000")
    assert all(
        reasons[f"{i}.jpg"] == "placeholder: the same content is served for 3 URLs"
        for i in range(3)
    )
    assert reasons["html.jpg"] == "not an image: Content-Type text/html"
    assert reasons["tiny.png"].startswith("tiny image 4x4")
    assert reasons["slow.png"] == "no answer within 1s (after 2 tries)"
    assert reasons["oops.png"] == "dead link: HTTP 500 (after 2 tries)"
    assert "not http or https" in reasons["ftp://example.org/x.png"]
    assert "not http or https" in reasons["file:///etc/passwd"]
    assert (
        server.hits["/dead.png"] == 1 and server.hits["/oops.png"] == 2
    )  # 4xx not retried, 5xx retried

    assert len(items) == 11 and report["downloaded"] == 11
    assert report["rows"] == 22 and report["rejected_fraction"] == pytest.approx(11 / 22, abs=1e-4)
    assert all(r["row"] >= 2 and r["reason"] for r in report["rejected"])
    assert Counter(i.label for i in items) == {"Ada": 5, "Bob": 6}
    assert {i.box for i in items if i.label == "Bob"} == {(4, 4, 40, 40)}
    assert {i.box for i in items if i.label == "Ada"} == {None}
    assert all(Path(i.path).is_relative_to(tmp_path / "downloads") for i in items)

    # Again: what was downloaded is not fetched again.
    before = sum(server.hits[f"/bob/{i}.png"] for i in range(6))
    ingest_urls(data, tmp_path / "downloads")
    assert sum(server.hits[f"/bob/{i}.png"] for i in range(6)) == before


def test_too_many_rejections_fail_with_numbers(tmp_path: Path, server: Server) -> None:
    manifest = _write(tmp_path, server, [r.format(u=server.url) for r in BAD_ROWS[:6]])
    data = DataConfig(
        source="urls",
        path=str(manifest),
        allow_private_hosts=LOCAL,
        max_rejected_fraction=0.2,
        download_timeout_s=1.0,
        download_retries=0,
    )
    with pytest.raises(SourceError) as info:
        ingest_urls(data, tmp_path / "downloads")
    message = str(info.value)
    assert "6 of 18 URL rows rejected (33% > data.max_rejected_fraction=20%)" in message
    assert "row 14: dead link: HTTP 404" in message and str(manifest) in message


def test_size_cap_and_missing_columns(tmp_path: Path, server: Server) -> None:
    manifest = _write(tmp_path, server, [])
    data = DataConfig(
        source="urls",
        path=str(manifest),
        max_download_bytes=100,
        max_rejected_fraction=1.0,
        allow_private_hosts=LOCAL,
    )
    with pytest.raises(SourceError, match="12 of 12 URL rows rejected"):
        ingest_urls(data, tmp_path / "d")
    bad = tmp_path / "bad.csv"
    bad.write_text("person,link\nx,y\n")
    with pytest.raises(SourceError, match="needs columns name,url"):
        ingest_urls(DataConfig(source="urls", path=str(bad)), tmp_path / "d")
