"""URL ingest as an attacker would use it: the list of what a URL manifest tried, and was refused.

A manifest is data a user was handed. Its rows must not reach the machine the workers run on, the
cloud's metadata service or the private network (server-side request forgery), directly, through a
redirect or through a second DNS answer; must not follow a redirect off http/https; must not hold a
worker past its deadline by dripping bytes; and must not make a worker decode a decompression bomb.
Each refusal is one rejected row with its reason, the rest of the manifest is ingested.

The test server listens on 127.0.0.1; it is reached only where the test allow-lists it
(``data.allow_private_hosts``), which is also how a user reaches an intranet image server.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3
from PIL import Image

from visionops.core.config import DataConfig
from visionops.data import fetch
from visionops.data.urls import ingest_urls

pytestmark = pytest.mark.integration  # an HTTP server in a thread of this process, over TCP


def _png(corpus, seed: int) -> bytes:  # noqa: ANN001 - the corpus fixture (tests/data/conftest.py)
    buf = io.BytesIO()
    Image.fromarray(corpus.textured(seed, 48)).save(buf, format="PNG")
    return buf.getvalue()


class Site:
    """A local server: ``routes`` maps a path to a handler writing the answer; requests are counted
    and the bytes each drip answer got out before the client hung up are recorded."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.dripped: dict[str, int] = {}
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits[self.path] += 1
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: what a deadline does

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def image(self, path: str, body: bytes) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = send

    def redirect(self, path: str, location: str) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = send

    def drip(self, path: str, body: bytes, every_s: float) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            self.dripped[path] = 0
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                self.dripped[path] = i + 1
                time.sleep(every_s)

        self.routes[path] = send


@pytest.fixture
def site(corpus) -> Iterator[Site]:  # noqa: ANN001
    s = Site()
    s.corpus = corpus
    for i in range(4):
        s.image(f"/ok/{i}.png", _png(corpus, i))
    yield s
    s.httpd.shutdown()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection urllib3 opens, as (address, port): the real ones, recorded."""
    seen: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    monkeypatch.setattr(urllib3.connection.connection, "create_connection", create_connection)
    return seen


def _ingest(tmp_path: Path, rows: list[str], **data) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest = tmp_path / "urls.csv"
    manifest.write_text("\n".join(["name,url", *rows]) + "\n")
    settings = {"download_timeout_s": 2.0, "download_retries": 0, "max_rejected_fraction": 1.0}
    config = DataConfig(source="urls", path=str(manifest), **(settings | data))
    _, report = ingest_urls(config, tmp_path / "downloads")
    return {r["url"]: r["reason"] for r in report["rejected"]} | {"_report": report}


PUBLIC = "images.example"  # stands for a public image host; served by the test server


@pytest.fixture
def public_name(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``images.example`` resolves to the test server (127.0.0.1) and is the one allow-listed name:
    the manifests' good rows go there; every other name and address is checked as in production.
    Returns the names looked up."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202
        asked.append(host)
        return real("127.0.0.1" if host == PUBLIC else host, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
    return asked


def _good_rows(site: Site, host: str = PUBLIC) -> list[str]:
    return [f"ok,http://{host}:{site.port}/ok/{i}.png" for i in range(4)]


NOT_GLOBAL = [
    "127.0.0.1",  # loopback: our own MLflow, Airflow API
    "127.8.9.10",
    "169.254.169.254",  # link-local: cloud metadata
    "10.0.0.1",  # private
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "[::1]",  # IPv6 loopback
    "[fe80::1]",  # IPv6 link-local
    "[fc00::1]",  # IPv6 unique local
    "[ff02::1]",  # IPv6 multicast
    "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
    "[::ffff:169.254.169.254]",
]


def test_every_non_public_address_is_refused_per_row_without_connecting(
    tmp_path: Path, site: Site, connections: list, public_name: list
) -> None:
    rows = [f"x,http://{host}:{site.port}/ok/0.png" for host in NOT_GLOBAL]
    rows.append(f"x,http://localhost:{site.port}/ok/0.png")  # a name that resolves to loopback
    reasons = _ingest(tmp_path, rows + _good_rows(site), allow_private_hosts=[PUBLIC])
    report = reasons.pop("_report")
    assert len(reasons) == len(rows), reasons
    assert all(
        r.startswith("refused: ") and "which is not a public address" in r for r in reasons.values()
    ), reasons
    assert "(add it to data.allow_private_hosts" in reasons[rows[0].split(",", 1)[1]]
    # The check comes before any connection: only the four good rows reached the server.
    assert report["downloaded"] == 4
    assert connections == [("127.0.0.1", site.port)] * 4
    assert site.hits == Counter({f"/ok/{i}.png": 1 for i in range(4)})


def test_loopback_only_when_allow_listed_by_name_or_network(
    tmp_path: Path, site: Site, connections: list
) -> None:
    by_network = _ingest(
        tmp_path / "a", _good_rows(site, "127.0.0.1"), allow_private_hosts=["127.0.0.0/8"]
    )
    assert by_network["_report"]["downloaded"] == 4 and len(by_network) == 1
    by_name = _ingest(
        tmp_path / "b", _good_rows(site, "localhost"), allow_private_hosts=["LOCALHOST"]
    )
    assert by_name["_report"]["downloaded"] == 4 and len(by_name) == 1
    assert {port for _, port in connections} == {site.port} and len(connections) == 8


def test_a_redirect_to_a_private_address_or_another_scheme_is_refused(
    tmp_path: Path, site: Site, public_name: list
) -> None:
    """Every hop is checked as the first: a redirect from the allowed host to loopback, to the
    metadata address, off http/https, or round and round past the limit is one refused row."""
    public = f"http://{PUBLIC}:{site.port}"
    site.redirect("/to-loopback.png", f"{site.url}/ok/0.png")
    site.redirect("/to-metadata.png", "http://169.254.169.254/latest/meta-data/")
    site.redirect("/to-ftp.png", f"ftp://{PUBLIC}/x.png")
    site.redirect("/to-file.png", "file:///etc/passwd")
    site.redirect("/relative.png", "/ok/1.png")  # a redirect on the same allowed host is followed
    for i in range(7):
        site.redirect(f"/loop/{i}", f"/loop/{i + 1}")
    paths = ("to-loopback.png", "to-metadata.png", "to-ftp.png", "to-file.png", "loop/0")
    urls = [f"{public}/{p}" for p in paths]
    reasons = _ingest(
        tmp_path,
        [f"x,{u}" for u in urls] + [f"x,{public}/relative.png"] + _good_rows(site),
        allow_private_hosts=[PUBLIC],
    )
    report = reasons.pop("_report")
    assert "127.0.0.1 resolves to 127.0.0.1, which is not a public address" in reasons[urls[0]]
    assert "169.254.169.254 resolves to 169.254.169.254" in reasons[urls[1]]
    assert f"scheme of 'ftp://{PUBLIC}/x.png' is not http or https" in reasons[urls[2]]
    assert "scheme of 'file:///etc/passwd' is not http or https" in reasons[urls[3]]
    assert reasons[urls[4]] == f"refused: more than {fetch.MAX_REDIRECTS} redirects"
    assert len(reasons) == 5 and report["downloaded"] == 5  # the relative redirect was followed
    assert site.hits["/ok/0.png"] == 1  # fetched once as itself, never through the redirect
    assert site.hits[f"/loop/{fetch.MAX_REDIRECTS}"] == 1
    assert site.hits[f"/loop/{fetch.MAX_REDIRECTS + 1}"] == 0


def test_the_connection_goes_to_the_address_that_was_checked(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch, connections: list
) -> None:
    """DNS rebinding: a name that answers an allowed address to the check and another one later
    must not be reached at the later one. The name is resolved once per hop, and the connection
    goes to that answer."""
    answers = iter(["127.0.0.1"] + ["127.0.0.2"] * 20)
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202
        if host == "rebind.example":
            asked.append(host)
            host = next(answers)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
    reasons = _ingest(
        tmp_path,
        [f"x,http://rebind.example:{site.port}/ok/2.png"],
        allow_private_hosts=["127.0.0.1/32"],
    )
    assert reasons["_report"]["downloaded"] == 1, reasons
    assert asked == ["rebind.example"]
    assert connections == [("127.0.0.1", site.port)]


def test_a_dripping_server_is_cut_off_at_the_deadline(
    tmp_path: Path, site: Site, public_name: list
) -> None:
    """One deadline for the whole download: a server sending a byte every 0.2 s (each read well
    within any per-read timeout) gets about deadline / 0.2 bytes out, then the client hangs up."""
    body = _png(site.corpus, 9)
    site.drip("/drip.png", body, every_s=0.2)
    drip = f"http://{PUBLIC}:{site.port}/drip.png"
    reasons = _ingest(
        tmp_path,
        [f"x,{drip}", *_good_rows(site)],
        allow_private_hosts=[PUBLIC],
        download_timeout_s=1.0,
    )
    assert reasons[drip] == "no answer within 1s (after 1 tries)"
    assert reasons["_report"]["downloaded"] == 4
    # The server notices the hang-up at its next write or two; wait until it stops counting.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = site.dripped.get("/drip.png", 0)
        time.sleep(0.5)
        if site.dripped.get("/drip.png", 0) == before:
            break
    assert 0 < site.dripped["/drip.png"] <= 1.0 / 0.2 + 5 < len(body), (site.dripped, len(body))
    assert not list((tmp_path / "downloads").glob("*.part"))


def test_a_decompression_bomb_by_url_is_one_rejected_row_never_decoded(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch, public_name: list
) -> None:
    site.image("/bomb.png", site.corpus.png_claiming(10_000, 10_000))
    decoded: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def load(self):  # noqa: ANN001, ANN202
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", load)
    reasons = _ingest(
        tmp_path,
        [f"x,http://{PUBLIC}:{site.port}/bomb.png", *_good_rows(site)],
        allow_private_hosts=[PUBLIC],
        max_pixels=50_000_000,
    )
    assert reasons[f"http://{PUBLIC}:{site.port}/bomb.png"] == (
        "10000x10000 = 100000000 pixels > data.max_pixels=50000000 (not decoded)"
    )
    assert reasons["_report"]["downloaded"] == 4  # the rest of the manifest goes on
    assert (10_000, 10_000) not in decoded and (48, 48) in decoded
    assert len(list((tmp_path / "downloads").iterdir())) == 4  # the bomb is not kept


def test_an_image_format_the_project_does_not_read_is_not_opened(
    tmp_path: Path, site: Site, public_name: list
) -> None:
    """EPS would run Ghostscript where it is installed: only the project's formats are opened."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    site.image("/drawing.png", eps)
    url = f"http://{PUBLIC}:{site.port}/drawing.png"
    reasons = _ingest(tmp_path, [f"x,{url}", *_good_rows(site)], allow_private_hosts=[PUBLIC])
    assert reasons[url] == "not an image: UnidentifiedImageError"


def test_the_pixel_limit_has_an_upper_bound() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        DataConfig(max_pixels=2_000_000_000)
    assert DataConfig(max_pixels=1_000_000_000).max_pixels == 1_000_000_000
