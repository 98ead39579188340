"""Run orchestration: a job prepared from its config (`job`), run end to end (`pipeline`), its finished-job
records and sweeps (`sweeps`, `sweep_checks`, `search`), tracking and clean termination."""
