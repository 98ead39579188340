"""Every digest and derived seed goes through calm.storage.digests, and moving a recipe there changed no value:
each function is checked against the expression it replaced (written out here with hashlib) and a few
values are pinned, so cache keys, clip files, test splits and seeds stay byte-identical."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calm.backbones.base import weights_fingerprint
from calm.cache.index import media_digest, text_digest
from calm.data.folder import holdout_split
from calm.data.hf import _fingerprint, _write_row
from calm.data.prompts import option_seed
from calm.protocols.episodes import EPISODE_SEED_TAG
from calm.selection.cross_validation import fold_seed
from calm.storage.atomic_write import write_bytes_atomic
from calm.storage.digests import chunks_sha256, mixed_seed, seeded_int, text_sha256
from calm.storage.file_digests import sha256_file
from calm.testing.tiny import _weights_digest

FOLD_SEED = 3391690389  # np.random.SeedSequence([0, 6515067889599963877]).generate_state(1)[0]
TEXTS = ["", "What sound is this?", "Kuckuck · ü 🐦\n", "a\tb"]


def _old_text(text: str, chars: int | None = None) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


@pytest.mark.parametrize("text", TEXTS)
def test_text_digests_equal_the_expressions_they_replaced(text: str) -> None:
    assert text_sha256(text) == _old_text(text)
    assert text_digest(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]  # cache/index.py
    assert text_sha256(text, 16) == _old_text(text, 16)  # audio_lm chat_template_sha256, data/hf.py


def test_pinned_keys_and_seeds() -> None:
    assert text_digest("What sound is this?") == "f84d20dd091b180334ba2f658dfa8e72"
    assert media_digest(["a" * 64, "b" * 64]) == "5e9ae866add9a85d69c3481d059bb9f1"
    assert media_digest(["c" * 64]) == "c" * 32
    assert seeded_int(EPISODE_SEED_TAG, 0, 3) == 6515067889599963877
    assert option_seed(7, "dog/1.wav") == 6750085689280774572
    assert fold_seed(0, 6515067889599963877) == FOLD_SEED


@pytest.mark.parametrize(("cv_seed", "episode_seed"), [(0, 0), (3, 2**62 + 5), (17, 123)])
def test_fold_seeds_equal_the_expression_they_replaced(cv_seed: int, episode_seed: int) -> None:
    old = int(np.random.SeedSequence([int(cv_seed), int(episode_seed)]).generate_state(1)[0])
    assert fold_seed(cv_seed, episode_seed) == mixed_seed(cv_seed, episode_seed) == old


def test_media_digest_equals_the_expression_it_replaced() -> None:
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
    assert media_digest(shas) == hashlib.sha256("\n".join(shas).encode()).hexdigest()[:32]


def test_file_and_weight_digests_equal_the_expressions_they_replaced(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 5000)
    assert sha256_file(tmp_path / "model.safetensors") == hashlib.sha256(bytes(range(256)) * 5000).hexdigest()
    listing = "".join(
        f"{p.name}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in sorted([tmp_path / "config.json", tmp_path / "model.safetensors"])
    )
    assert weights_fingerprint(str(tmp_path), None) == f"local:{_old_text(listing, 32)}"
    assert chunks_sha256([b"ab", b"", b"c"]) == hashlib.sha256(b"abc").hexdigest()


def test_the_tiny_models_weight_digest_equals_the_expression_it_replaced() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    old = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        old.update(name.encode())
        old.update(tensor.detach().contiguous().numpy().tobytes())
    assert _weights_digest(model) == old.hexdigest()[:16]


def test_the_hf_cache_folder_and_the_folder_test_split_keep_their_names() -> None:
    ds = SimpleNamespace(_fingerprint="f00d")
    text = json.dumps(["org/data", None, "main", "train", "f00d"])
    assert _fingerprint("org/data", None, "main", "train", ds) == _old_text(text, 16)
    ids = [f"clip{i}" for i in range(20)]
    held = holdout_split({"a": ids[:10], "b": ids[10:]}, 0.3, seed=5)
    expected = set()
    for part in (ids[:10], ids[10:]):
        expected.update(sorted(part, key=lambda cid: _old_text(f"5:{cid}"))[:3])
    assert held == expected


def test_no_other_module_hashes_on_its_own() -> None:
    """The recipes have one home: no module of calm or scripts imports hashlib but calm/storage/digests.py."""
    repo = Path(__file__).resolve().parents[1]
    own = [
        str(path.relative_to(repo))
        for folder in ("calm", "scripts")
        for path in (repo / folder).rglob("*.py")
        if "hashlib" in path.read_text() and path != repo / "calm" / "storage" / "digests.py"
    ]
    assert own == []


def test_concurrent_writers_of_one_clip_never_collide(tmp_path: Path) -> None:
    """Eight writers of the same row (two processes materialising one split): each write is whole, none
    fails on another's temporary file (a fixed `.part` name did), and no temporary file is left."""
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(5):
                _write_row({"bytes": data, "path": "x.wav"}, tmp_path, 0)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["0.wav"]
    assert (tmp_path / "0.wav").read_bytes() in payloads


def test_atomic_bytes_use_a_fresh_temporary_name_per_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    sources: list[str] = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (sources.append(str(src)), replace(src, dst))[1])
    write_bytes_atomic(tmp_path / "a.bin", b"1", durable=False)
    write_bytes_atomic(tmp_path / "a.bin", b"2", durable=False)
    assert len(set(sources)) == 2 and all(Path(s).parent == tmp_path for s in sources)
    assert (tmp_path / "a.bin").read_bytes() == b"2"
