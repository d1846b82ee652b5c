"""Data-directory resolution order, download from a local HTTP mirror, the not-found message."""

from __future__ import annotations

import functools
import gzip
import http.server
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

from fedpdmm.data import files as data_files
from fedpdmm.data import load_dataset, resolve_data_dir, user_cache_dir
from fedpdmm.data.locate import download_urls
from fedpdmm.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class ShortBodyHandler(QuietHandler):
    """Announces more bytes than it sends, then closes the connection."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\x00" * 98)
        self.close_connection = True


@pytest.fixture
def serve(tmp_path):
    """serve(handler=QuietHandler) -> base URL of a threaded HTTP server on 127.0.0.1 for
    tmp_path/"mirror"; servers are shut down at teardown."""
    servers = []
    root = tmp_path / "mirror"
    root.mkdir()

    def start(handler=QuietHandler):
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    start.root = root
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- resolution order ------------------------------------------------------------------------


def test_search_order_first_complete_folder_wins(
    tmp_path, monkeypatch, isolated_data_env, write_tiny_dataset
):
    env = isolated_data_env
    given, from_env = tmp_path / "given", tmp_path / "from-env"
    for root in (given, from_env, env.cache, env.system):
        write_tiny_dataset(root, "mnist")
    monkeypatch.setenv("FEDPDMM_DATA", str(from_env))
    assert resolve_data_dir("mnist", data_dir=given, download=False) == given / "mnist"
    assert resolve_data_dir("mnist", download=False) == from_env / "mnist"
    monkeypatch.delenv("FEDPDMM_DATA")
    assert resolve_data_dir("mnist", download=False) == env.cache / "mnist"
    (env.cache / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # incomplete: skipped
    assert resolve_data_dir("mnist", download=False) == env.system / "mnist"


def test_user_cache_follows_xdg_then_home(monkeypatch, isolated_data_env):
    assert user_cache_dir() == isolated_data_env.cache
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored (XDG spec)
    assert user_cache_dir() == isolated_data_env.home / ".cache" / "fedpdmm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == isolated_data_env.home / ".cache" / "fedpdmm"


def test_fashion_mnist_from_system_folder(isolated_data_env, write_tiny_dataset):
    write_tiny_dataset(isolated_data_env.system, "fashion_mnist", gz=False)
    ds = load_dataset("fashion_mnist", download=False)
    assert (len(ds.y_train), len(ds.y_test)) == (30, 10)


def test_corrupt_first_hit_is_an_error_not_skipped(tmp_path, monkeypatch, write_tiny_dataset):
    write_tiny_dataset(tmp_path / "good", "mnist")
    write_tiny_dataset(tmp_path / "bad", "mnist")
    (tmp_path / "bad" / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    monkeypatch.setenv("FEDPDMM_DATA", str(tmp_path / "good"))
    message = re.escape(f"{tmp_path}/bad/mnist/train-labels-idx1-ubyte.gz is not a valid gzip")
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", data_dir=tmp_path / "bad", download=False)


def test_not_found_message_lists_every_place(tmp_path, monkeypatch, isolated_data_env):
    env = isolated_data_env
    partial = tmp_path / "env-root" / "fashion-mnist"
    partial.mkdir(parents=True)
    (partial / "train-images-idx3-ubyte").write_bytes(b"")
    monkeypatch.setenv("FEDPDMM_DATA", str(tmp_path / "env-root"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset fashion_mnist not found; searched: ")
    for place in (
        f"--data-dir {tmp_path / 'nowhere' / 'fashion-mnist'} (no such folder)",
        f"FEDPDMM_DATA {partial} (missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte)",
        f"user cache {env.cache / 'fashion-mnist'} (no such folder)",
        f"system {env.system / 'fashion-mnist'} (no such folder)",
        "download disabled",
        "--data-dir DIR",
        "FEDPDMM_DATA=DIR",
        "apt install dataset-fashion-mnist",
    ):
        assert place in message


def test_resolve_rejects_datasets_without_files():
    with pytest.raises(ConfigError, match="'digits' has no files to locate"):
        resolve_data_dir("digits")


def test_canonical_urls_without_mirror(monkeypatch):
    monkeypatch.delenv("FEDPDMM_MIRROR")
    files = data_files.FILE_SETS
    assert download_urls(files["mnist"])[0] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    )
    assert download_urls(files["fashion_mnist"])[3] == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"
    )
    assert download_urls(files["olivetti"]) == ("https://ndownloader.figshare.com/files/5976027",)
    monkeypatch.setenv("FEDPDMM_MIRROR", "http://host:1/base/")
    assert download_urls(files["olivetti"]) == ("http://host:1/base/olivetti/olivettifaces.mat",)


# ---- download --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "olivetti"])
def test_download_lands_in_cache_and_loads(
    monkeypatch, isolated_data_env, serve, write_tiny_dataset, capsys, name
):
    contents = write_tiny_dataset(serve.root, name)
    expected = load_dataset(name, data_dir=serve.root, download=False)
    monkeypatch.setenv("FEDPDMM_MIRROR", serve())
    ds = load_dataset(name)
    cache = isolated_data_env.cache / data_files.FILE_SETS[name].folder
    served = [f"{n}.gz" for n in contents] if name == "mnist" else list(contents)
    assert files_in(cache) == sorted(served)  # no temporary files left
    assert torch.equal(ds.x_train, expected.x_train) and torch.equal(ds.y_test, expected.y_test)
    assert capsys.readouterr().err.count("\n") == 1  # one progress line
    monkeypatch.setenv("FEDPDMM_MIRROR", closed_port_url())
    assert torch.equal(load_dataset(name).x_test, expected.x_test)  # served from the cache


def test_download_fetches_only_missing_files(
    monkeypatch, isolated_data_env, serve, write_tiny_dataset
):
    write_tiny_dataset(isolated_data_env.cache, "mnist")
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (serve.root / "mnist").mkdir(exist_ok=True)
        (isolated_data_env.cache / "mnist" / name).rename(serve.root / "mnist" / name)
    monkeypatch.setenv("FEDPDMM_MIRROR", serve())
    assert len(load_dataset("mnist").y_train) == 30
    assert len(files_in(isolated_data_env.cache / "mnist")) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: gzip.compress(data[:-1] + b"\x01"), "fails its SHA-256 check"),
        (lambda data: gzip.compress(data)[:-20], "not valid gzip"),
    ],
)
def test_corrupt_download_leaves_nothing(
    monkeypatch, isolated_data_env, serve, write_tiny_dataset, change, message
):
    contents = write_tiny_dataset(serve.root, "mnist")
    served = serve.root / "mnist" / "t10k-images-idx3-ubyte.gz"
    served.write_bytes(change(contents["t10k-images-idx3-ubyte"]))
    url = serve()
    monkeypatch.setenv("FEDPDMM_MIRROR", url)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("mnist")
    assert f"{url}/mnist/t10k-images-idx3-ubyte.gz" in str(info.value)
    cache = isolated_data_env.cache / "mnist"
    assert "t10k-images-idx3-ubyte.gz" not in files_in(cache)
    assert not [n for n in files_in(cache) if n.endswith(".part")]


def test_server_down_gives_one_not_found_error(monkeypatch, isolated_data_env):
    url = closed_port_url()
    monkeypatch.setenv("FEDPDMM_MIRROR", url)
    with pytest.raises(DataError) as info:
        load_dataset("olivetti", data_dir=isolated_data_env.home / "data")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset olivetti not found; searched: --data-dir ")
    assert f"download {url}/olivetti/olivettifaces.mat failed (" in message
    assert "refused" in message.lower()
    for place in ("data/olivetti", str(isolated_data_env.cache), str(isolated_data_env.system)):
        assert place in message
    assert "apt install" not in message  # only Fashion-MNIST has a Debian package
    assert files_in(isolated_data_env.cache / "olivetti") == []


@pytest.mark.parametrize(
    ("handler", "reason"),
    [(QuietHandler, "HTTP 404"), (ShortBodyHandler, "connection closed after 100 of 1000 bytes")],
)
def test_http_failures_are_reported_and_leave_nothing(
    monkeypatch, isolated_data_env, serve, handler, reason
):
    monkeypatch.setenv("FEDPDMM_MIRROR", serve(handler))
    with pytest.raises(DataError, match=f"train-images-idx3-ubyte.gz failed \\({reason}"):
        load_dataset("mnist")
    assert files_in(isolated_data_env.cache / "mnist") == []
