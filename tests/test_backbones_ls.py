"""`python -m calm.backbones ls`: every backbone config listed from its description, no weights loaded."""

from __future__ import annotations

from pathlib import Path

from calm.backbones.listing import backbone_rows, render
from tests.cli import REPO


def test_every_backbone_config_is_listed_with_its_heads_and_prompt_use() -> None:
    rows = {row.name: row for row in backbone_rows()}
    assert set(rows) == {p.stem for p in (REPO / "configs" / "backbone").glob("*.yaml")}
    assert rows["tiny_qwen3_omni"].heads == "2 × 4 × 16 = 8 heads" and rows["tiny_qwen3_omni"].family == "qwen3_omni"
    assert (
        rows["qwen3_omni"].heads == "from hub config"
        and rows["qwen3_omni"].hub_id == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    )
    assert rows["whisper_tiny"].reads_prompt == "no" and rows["whisper_tiny"].family == "whisper"
    assert rows["glm_asr"].reads_prompt == "yes"


def test_a_backbone_of_any_class_is_listed_generically(tmp_path: Path) -> None:
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "my_whisper.yaml").write_text(
        "_target_: calm.backbones.whisper.WhisperBackbone\nname: my_whisper\nhub_id: me/whisper\n"
        "path: ${paths.data_dir}/w\ntext_prompt: true\n"
    )
    (row,) = backbone_rows(tmp_path)
    assert (row.name, row.family, row.hub_id, row.audio, row.reads_prompt) == (
        "my_whisper",
        "whisper",
        "me/whisper",
        "30 s window",
        "yes",
    )
    assert render([row], markdown=True).splitlines()[2].startswith("| my_whisper | whisper |")
