"""Fixtures of the Python binding tests: the generated `edgeloop` module,
the real default model opened once, and a running host.

The bindings come from `ffi/bindgen.sh` (default `target/bindings/python`,
or `$EDGELOOP_BINDINGS`); the binaries from `target/release`.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINDINGS = pathlib.Path(os.environ.get("EDGELOOP_BINDINGS", ROOT / "target" / "bindings" / "python"))
BIN = ROOT / "target" / "release"
TOKEN = "python-test-token-0123456789"

sys.path.insert(0, str(BINDINGS))
import edgeloop  # noqa: E402  (generated; found through the path above)

DEFAULT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def engine():
    """The real default model (pulled by tests/run.sh)."""
    return edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig())


def greedy(max_tokens=16, **kw):
    """A deterministic generation config."""
    return edgeloop.GenerateConfig(max_tokens=max_tokens, temperature=0.0, **kw)


class Collect(edgeloop.TokenListener):
    """Keeps every streamed piece; stops after `stop_after` pieces if given."""

    def __init__(self, stop_after=None, on_first=None):
        self.pieces = []
        self.stop_after = stop_after
        self.on_first = on_first

    def on_token(self, text):
        self.pieces.append(text)
        if len(self.pieces) == 1 and self.on_first is not None:
            self.on_first()
        return self.stop_after is None or len(self.pieces) < self.stop_after


class Host:
    """A running `edgeloop-trainer serve` on loopback with its own store."""

    def __init__(self, db):
        self.db = db
        self.proc = subprocess.Popen(
            [str(BIN / "edgeloop-trainer"), "serve", "--db", str(db),
             "--listen", "127.0.0.1:0", "--token", TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        prefix = "listening on "
        assert line.startswith(prefix), f"host did not start: {line!r}"
        self.url = line[len(prefix):]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "host.sqlite")
    yield h
    h.stop()
