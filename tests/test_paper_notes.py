"""protocol=paper's notes say what the reader must know, and never contradict the job's settings. The
notes are decided on the built dataset, prompt and protocol (their classes, not their config strings)."""

from pathlib import Path

from omegaconf import OmegaConf

from calm.data.prompts import build_prompt
from calm.data.registry import build_dataset
from calm.reports.paper_grid import paper_notes
from calm.run.job import build_protocol
from tests.cli import compose_config


def notes_for(tmp_path: Path, dataset: str, prompt: str, *overrides: str) -> list[str]:
    cfg = compose_config([f"dataset={dataset}", f"prompt={prompt}", "protocol=paper", *overrides], tmp_path)
    return paper_notes(
        build_dataset(cfg.dataset),
        build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True)),
        build_protocol(cfg),
        str(cfg.evaluate.dtype),
    )


def test_clean_esc50_pool_says_test_fold_is_never_support_and_where_the_authors_files_run(tmp_path: Path):
    notes = notes_for(tmp_path, "esc50", "paper_esc50_caption")
    assert any("no clip of the test split is ever in the support set" in n for n in notes)
    assert any("replay groups run the authors' files" in n for n in notes)
    assert not any("prompt is not" in n for n in notes)  # a paper_* wording is a paper prompt


def test_manifests_never_claim_clean_support(tmp_path: Path):
    notes = notes_for(tmp_path, "manifest", "manifest")
    assert not any("never in the support set" in n or "ever in the support set" in n for n in notes)
    assert any("used as both" in n and "measured" in n for n in notes)
    assert not any("prompt is not" in n for n in notes)


def test_clean_prompt_is_flagged(tmp_path: Path):
    notes = notes_for(tmp_path, "fsdd", "clean")
    assert any("prompt is not a `paper` prompt" in n for n in notes)
    assert not any("ESC-50" in n for n in notes)


def test_named_reliability_and_model_dtype_are_noted(tmp_path: Path):
    notes = notes_for(tmp_path, "fsdd", "paper", "protocol.reliability=val", "evaluate.dtype=model")
    assert any("measured on the table's val clips V" in n for n in notes)
    assert any("evaluate.dtype=model" in n for n in notes)
    assert not any("val clips V" in n or "dtype=model" in n for n in notes_for(tmp_path / "b", "fsdd", "paper"))
