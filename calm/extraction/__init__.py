"""Extraction: which clips need rows (`plan`), what the rows are keyed by (`row_inputs`), the step that
fills the activation cache (`extract`) and its Lightning pass over the missing batches (`trainer_pass`)."""
