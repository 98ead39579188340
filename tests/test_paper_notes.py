"""protocol=paper's notes say what the reader must know, and never contradict the job's settings."""

from omegaconf import OmegaConf

from calm.reports.paper_grid import paper_notes

PAPER_PROMPT = "calm.data.prompts.PaperPrompt"


def notes_for(dataset: str, prompt_target: str, dataset_target: str = "") -> list[str]:
    return paper_notes(OmegaConf.create({"dataset": {"name": dataset, "_target_": dataset_target},
                                         "protocol": {},
                                         "prompt": {"name": "paper_esc50_caption", "_target_": prompt_target}}))


def test_clean_esc50_pool_says_test_fold_is_never_support_and_where_the_authors_files_run():
    notes = notes_for("esc50", PAPER_PROMPT)
    assert any("no clip of the test split is ever in the support set" in n for n in notes)
    assert any("replay groups run the authors' files" in n for n in notes)
    assert not any("prompt is not" in n for n in notes)  # a paper_* wording is a paper prompt


def test_manifests_never_claim_clean_support():
    notes = notes_for("manifest", PAPER_PROMPT, "calm.data.manifest.Manifest")
    assert not any("never in the support set" in n or "ever in the support set" in n for n in notes)
    assert any("used as both" in n and "measured" in n for n in notes)


def test_clean_prompt_is_flagged():
    notes = notes_for("fsdd", "calm.data.prompts.Prompt")
    assert any("prompt is not a `paper` prompt" in n for n in notes)
    assert not any("ESC-50" in n for n in notes)
