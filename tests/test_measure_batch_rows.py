"""scripts/measure_batch_rows.py, behind docs/design/cache.md's batch-size bound: real Whisper tiny.en
rows of real FSDD clips extracted alone and in one batch of 4 differ by less than one float16 step of
their head's scale, and each cache's index recorded the batch its rows were computed in."""

from __future__ import annotations

import pytest

from tests.cli import load_script


@pytest.mark.slow
def test_rows_extracted_alone_and_in_a_batch_differ_by_at_most_one_float16_step(
    whisper_dir, fsdd_root, capsys: pytest.CaptureFixture[str]
) -> None:
    measure = load_script("measure_batch_rows")
    result = measure.main(
        ["--clips", "4", "--batch-size", "4", "--weights", str(whisper_dir), "--fsdd", str(fsdd_root)]
    )
    assert result["recorded_batch_sizes"] == {"alone": [1], "batched": [4]}
    assert result["max_relative_to_head"] <= 2**-10, "the README's bound"
    assert "max |difference|" in capsys.readouterr().out
