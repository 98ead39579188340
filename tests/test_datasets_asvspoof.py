"""ASVspoof 2019 LA: CM protocol files and flac partitions, pools by partition, bad lines named."""

from __future__ import annotations

from pathlib import Path

import pytest

from calm.data.asvspoof import load_asvspoof2019_la
from calm.data.audio import load_audio, probe_audio
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.errors import ConfigError, DataError
from calm.testing.smoke_layouts import make_asvspoof
from tests.cli import dataset_config

PARTITIONS = {
    "train": [
        "LA_0079 LA_T_1138215 - - bonafide",
        "LA_0079 LA_T_1271820 - A01 spoof",
        "LA_0080 LA_T_1272637 - A02 spoof",
    ],
    "dev": ["LA_0069 LA_D_1047731 - - bonafide", "LA_0069 LA_D_1105538 - A03 spoof"],
    "eval": [
        "LA_0039 LA_E_2834763 - A11 spoof",
        "LA_0014 LA_E_8877452 - - bonafide",
        "LA_0040 LA_E_6828287 - A13 spoof",
    ],
}


def _read(root: Path, tmp_path: Path, **options):
    return read_dataset(dataset_config("asvspoof2019_la", root=str(root), **options), tmp_path)


def test_support_from_train_queries_from_eval_with_missing_flacs_reported(tmp_path: Path) -> None:
    la = make_asvspoof(tmp_path, PARTITIONS, absent=["LA_E_6828287"])
    loaded = _read(tmp_path, tmp_path)
    table = loaded.table
    assert table.class_names == ("bonafide", "spoof")
    assert loaded.missing == (str(la / "ASVspoof2019_LA_eval" / "flac" / "LA_E_6828287.flac"),)
    assert [c.id for c in table.clips if c.split == SUPPORT_SPLIT] == ["LA_T_1138215", "LA_T_1271820", "LA_T_1272637"]
    assert [c.id for c in table.clips if c.split == QUERY_SPLIT] == ["LA_E_2834763", "LA_E_8877452"]
    by_id = {c.id: c for c in table.clips}
    assert by_id["LA_T_1138215"].label == 0 and by_id["LA_T_1271820"].label == 1
    assert dict(by_id["LA_T_1271820"].meta) == {"speaker": "LA_0079", "attack": "A01", "partition": "train"}
    flac = by_id["LA_E_8877452"].audio_path
    assert flac == la / "ASVspoof2019_LA_eval" / "flac" / "LA_E_8877452.flac"
    assert probe_audio(flac).sample_rate == 16000 and load_audio(flac, 16000).shape == (800,)


def test_partitions_are_configurable_and_root_may_be_la_itself(tmp_path: Path) -> None:
    la = make_asvspoof(tmp_path, PARTITIONS)
    table = _read(la, tmp_path, support_split="dev", query_split="eval").table
    assert {c.meta["partition"] for c in table.clips if c.split == SUPPORT_SPLIT} == {"dev"}
    assert len(table) == 5
    with pytest.raises(ConfigError, match="both 'eval'"):
        _read(la, tmp_path, support_split="eval", query_split="eval")
    with pytest.raises(ConfigError, match=r"query_split='test'.*\n.*\['dev', 'eval', 'train'\]"):
        _read(la, tmp_path, query_split="test")


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        pytest.param(
            {"train": [*PARTITIONS["train"], "LA_0080 LA_T_9999999 - A02 fake"]},
            r"ASVspoof2019\.LA\.cm\.train\.trn\.txt line 4: key is 'fake', expected bonafide or spoof",
            id="key-other-than-bonafide-or-spoof",
        ),
        pytest.param(
            {"eval": ["LA_0039 LA_E_2834763 - A11 spoof", "LA_0014 LA_E_8877452 bonafide"]},
            r"ASVspoof2019\.LA\.cm\.eval\.trl\.txt line 2: expected 5 fields \(SPEAKER UTT - ATTACK KEY\), found 3",
            id="wrong-number-of-fields",
        ),
        pytest.param(
            {"eval": ["LA_0079 LA_T_1138215 - - bonafide"]},
            r"duplicate clip id 'LA_T_1138215' in .*eval\.trl\.txt line 1 \(first listed in .*train\.trn\.txt line 1\)",
            id="duplicate-utterance-names-both-places",
        ),
    ],
)
def test_a_bad_protocol_line_names_the_file_and_line(
    tmp_path: Path, changed: dict[str, list[str]], message: str
) -> None:
    la = make_asvspoof(tmp_path, {**PARTITIONS, **changed})
    with pytest.raises(DataError, match=message):
        load_asvspoof2019_la(la)


def test_missing_root_or_protocol_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ASVspoof 2019 LA: dataset.root is not set") as err:
        read_dataset(dataset_config("asvspoof2019_la", root=None), tmp_path)
    assert "https://datashare.ed.ac.uk/handle/10283/3336" in str(err.value) and "dataset.root=" in str(err.value)
    make_asvspoof(tmp_path, {"train": PARTITIONS["train"]})
    with pytest.raises(DataError, match=r"protocol file not found: .*ASVspoof2019\.LA\.cm\.eval\.trl\.txt"):
        _read(tmp_path, tmp_path)
