"""protocol=paper's notes say what the reader must know, and never contradict the job's settings."""

from omegaconf import OmegaConf

from calm.reports.paper_grid import paper_notes

PAPER_PROMPT = "calm.data.prompts.PaperPrompt"


def notes_for(dataset: str, support_pool: str, prompt_target: str) -> list[str]:
    return paper_notes(OmegaConf.create({"dataset": {"name": dataset},
                                         "protocol": {"support_pool": support_pool},
                                         "prompt": {"name": "paper_esc50_caption", "_target_": prompt_target}}))


def test_clean_esc50_pool_says_test_fold_is_never_support_and_how_to_get_the_authors_pool():
    notes = notes_for("esc50", "clean", PAPER_PROMPT)
    assert any("no clip of the test split is ever in the support set" in n for n in notes)
    assert any("protocol.support_pool=ast_leaky" in n for n in notes)
    assert not any("prompt is not" in n for n in notes)  # a paper_* wording is a paper prompt


def test_leaky_pool_never_claims_clean_support():
    notes = notes_for("esc50", "ast_leaky", PAPER_PROMPT)
    assert not any("never in the support set" in n or "ever in the support set" in n for n in notes)
    assert any("hold" in n and "test clips" in n for n in notes)


def test_clean_prompt_is_flagged():
    notes = notes_for("fsdd", "clean", "calm.data.prompts.Prompt")
    assert any("prompt is not a `paper` prompt" in n for n in notes)
    assert not any("ESC-50" in n for n in notes)
