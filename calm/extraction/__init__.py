"""Extraction: which clips need rows (`plan`), what the rows are keyed by (`row_inputs`), and the
backbone run that fills the activation cache (`extract`)."""
