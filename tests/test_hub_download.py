"""Without local assets the weights come from the hub id: that download path is the real one
(`from_pretrained(hub_id)` through huggingface_hub), exercised here against a fake hub on 127.0.0.1
serving a tiny random Whisper that the test builds (tokenizer and feature extractor from the real
tiny.en processor, read in place)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[1]
HUB_ID = "calm-test/tiny-whisper"
LAYERS, HEADS, D_MODEL = 2, 4, 64
N_HEADS = 3 * LAYERS * HEADS  # decoder self + decoder cross + encoder self, per layer, per head
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

# Run in a fresh interpreter: huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when imported.
PROGRAM = """
import json, sys
import numpy as np
from calm.backbones.whisper import WhisperBackbone
from calm.errors import AssetError

hub_id = sys.argv[1]
backbone = WhisperBackbone(hub_id=hub_id, assets_name=None)
assert backbone.source == hub_id, backbone.source
try:
    n_heads = backbone.n_heads
    backbone.load()
except AssetError as err:
    print(json.dumps({"asset_error": str(err)}))
    sys.exit(3)
wave = np.sin(np.linspace(0, 400 * np.pi, 16000)).astype(np.float32) * 0.3
heads = backbone.capture(backbone.collate([wave], ["q"]))
print(json.dumps({"n_heads": n_heads, "head_dim": backbone.head_dim, "shape": list(heads.shape),
                  "sum": float(heads.double().sum()), "finite": bool(heads.isfinite().all())}))
"""

HF_ENV_VARS = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def tiny_repo(tmp_path: Path, whisper_dir: Path) -> Path:
    """A model repo made here: a tiny random Whisper plus the real tiny.en processor files (read in place)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    real = whisper_dir
    repo = tmp_path / "tiny-whisper-repo"
    processor = WhisperProcessor.from_pretrained(str(real))
    processor.save_pretrained(str(repo))
    real_cfg = json.loads((real / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=len(processor.tokenizer),
        d_model=D_MODEL,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        suppress_tokens=real_cfg["suppress_tokens"],
        begin_suppress_tokens=real_cfg["begin_suppress_tokens"],
        **{key: real_cfg[key] for key in SPECIAL_IDS},
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(str(repo), safe_serialization=True)
    assert (repo / "model.safetensors").is_file() and (repo / "config.json").is_file()
    return repo


@pytest.fixture
def hub(tiny_repo: Path) -> Iterator[FakeHub]:
    fake = FakeHub({HUB_ID: tiny_repo}).start()
    try:
        yield fake
    finally:
        fake.stop()


def _free_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(endpoint: str, hf_home: Path, assets: Path, offline: bool) -> subprocess.Popen:
    """The program in a fresh interpreter, with only the given hub settings (none inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in HF_ENV_VARS + PROXY_VARS}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        CALM_ASSETS=str(assets),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        PYTHONPATH=str(REPO),
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, HUB_ID],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the subprocess ran past {timeout}s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    return proc.returncode, out, err


def _result(proc: subprocess.Popen, expect_rc: int = 0) -> dict:
    rc, out, err = _finish(proc)
    assert rc == expect_rc, f"rc={rc}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The run with the hub unreachable and an empty HF_HOME, started before the others (and before the
    tiny repo is built) because it waits out huggingface_hub's real retry backoff (about 23 s)."""
    empty_home, assets = tmp_path / "empty_hf_home", tmp_path / "no_assets_unreachable"
    empty_home.mkdir()
    assets.mkdir()
    proc = _start(f"http://127.0.0.1:{_free_port()}", empty_home, assets, offline=False)
    try:
        yield proc, empty_home
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_hub_id_downloads_then_cache_then_clear_error(
    unreachable: tuple[subprocess.Popen, Path], hub: FakeHub, tmp_path: Path
) -> None:
    hf_home, assets = tmp_path / "hf_home", tmp_path / "no_assets"
    assets.mkdir()

    # 1. Nothing local: config, weights and processor come from the (fake) hub.
    online = _result(_start(hub.url, hf_home, assets, offline=False))
    assert online["n_heads"] == N_HEADS and online["head_dim"] == D_MODEL // HEADS
    assert online["shape"] == [1, N_HEADS, D_MODEL // HEADS] and online["finite"]
    commit = hub.commits[HUB_ID]
    got = set(hub.paths("GET"))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        # huggingface_hub may first resolve `main` to the commit (GET /api/models/...), then fetch by commit.
        urls = {f"/{HUB_ID}/resolve/{rev}/{name}" for rev in ("main", commit)}
        assert urls & got, f"{name} was never downloaded; requests: {hub.requests}"
    assert not hub.unhandled, f"the client called routes the fake hub does not serve: {hub.unhandled}"
    cache = hf_home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    assert (cache / "refs" / "main").read_text() == commit
    snapshot = cache / "snapshots" / commit
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (snapshot / name).read_bytes() == (hub.repos[HUB_ID] / name).read_bytes()

    # 2. Hub gone and offline: the cached download is reused, same numbers.
    hub.stop()
    cached = _result(_start(f"http://127.0.0.1:{_free_port()}", hf_home, assets, offline=True))
    assert cached["sum"] == pytest.approx(online["sum"], rel=1e-5, abs=1e-4)
    assert {**cached, "sum": 0} == {**online, "sum": 0}

    # 3. Hub unreachable and nothing cached: a user-facing AssetError naming the fix.
    proc, empty_home = unreachable
    message = _result(proc, expect_rc=3)["asset_error"]
    assert "backbone.path" in message and HUB_ID in message
    assert not any(empty_home.rglob("*.safetensors"))
