"""One job as its data flow (docs/design/data_flow.md): prepare (table, protocol, pools, methods, backbone
object, prompt, cache; every check that needs no model), extract the missing rows, draw the episodes,
run the reports (estimators, zero-shot, pseudo-label refit, search objective, paper grid), and write
the results. W&B is finished, marked failed on error, whatever happens after it starts."""

from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig

from calm.extraction.extract import ExtractionReport, extract_missing
from calm.extraction.row_inputs import job_inputs
from calm.protocols import Episode, shared_file_marks, support_marks
from calm.reports import ReportOutput, print_table, result_rows
from calm.run.job import PreparedJob, open_tracker, prepare
from calm.run.termination import stops_on_sigterm
from calm.run.tracking import NullTracker, write_results

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; a SIGTERM stops it cleanly with JobTerminated (calm.run.termination), keeping
    every row it wrote."""
    with stops_on_sigterm():
        return run_prepared(prepare(cfg))


def run_prepared(job: PreparedJob) -> dict[str, Any]:
    """A job with the same settings that finished on the same inputs (the model's content and prompt, the
    clip table: `calm.extraction.row_inputs.job_inputs`, as rows are keyed) is reported again, not recomputed (the
    table is read first: its digest is part of what "the same job" means)."""
    inputs = job_inputs(job.backbone, job.prompt, job.table, job.cache.digests) if job.main else {}
    done = job.record.load(inputs) if job.main else None
    if done is not None:
        return report_finished(job, done)
    tracker = open_tracker(job) if job.main else NullTracker()
    failed = True
    try:
        started = time.perf_counter()
        job, episodes, extraction = extract_for_episodes(job)
        extract_seconds = time.perf_counter() - started
        if not job.main or extraction.rank != 0:  # a DDP rank other than 0: its share is in the cache
            log.info("rank %d: extraction done; evaluation and results are left to rank 0", extraction.rank)
            failed = False
            return {"rank": extraction.rank, "extracted": extraction.extracted}
        features = job.cache.rows(job.table.ids) if job.reads_features else None
        outputs = []
        for report in job.reports:  # pseudo_label.support=replace: every report on the relabelled support
            episodes, relabelling = report.relabel(job, episodes)
            if relabelling is not None:
                outputs.append(relabelling)
        outputs += [report.run(job, features, episodes, tracker) for report in job.reports]
        rows, episode_rows, extra = merge(job, episodes, outputs)
        extra = {
            "cache": {
                "path": str(job.cache.path),
                "key": job.cache.key,
                "needed": extraction.needed,
                "extracted": extraction.extracted,
                "recomputed": extraction.recomputed,
                "headers_read": extraction.headers_read,
                "extract_seconds": extract_seconds,
            },
            "clips": len(job.table),
            "skipped": sorted(extraction.skipped),
            "missing": len(job.loaded.missing),
            "prompt": job.prompt.key_fields(),
            "protocol": job.protocol.name,
            **extra,
        }
        write_results(job.out_dir, job.config, rows, episode_rows, extra)
        job.record.mark({"config": job.config, "results": rows, **extra}, job.out_dir, inputs)
        tracker.log_results(rows)
        print_table(
            rows,
            f"{job.dataset.name} · {job.backbone.name} · {job.shots}-shot · {job.protocol.name} "
            f"protocol · {len(episodes)} episode{'s' if len(episodes) > 1 else ''}",
        )
        failed = False
        return {"results": rows, **extra}
    finally:
        tracker.finish(failed=failed)


def report_finished(job: PreparedJob, done: dict[str, Any]) -> dict[str, Any]:
    """An identical job already finished: its results are written into this job's folder and printed."""
    log.info("an identical job already finished in %s; skipping it (force=true redoes it)", done["output_dir"])
    write_results(
        job.out_dir,
        done["config"],
        done["results"],
        [],
        {k: v for k, v in done.items() if k not in ("config", "results", "output_dir")}
        | {"resumed_from": done["output_dir"]},
    )
    print_table(done["results"], f"{job.dataset.name} · {job.shots}-shot · already finished in {done['output_dir']}")
    return done


def needed_clips(job: PreparedJob, episodes: list[Episode]) -> list[str]:
    """The clips whose rows the reports read: every episode's support, query and named reliability clips,
    and the rows a report reads beyond them (a pseudo-labelled refit's pool); none when no report reads
    features (zero-shot only)."""
    if not job.reads_features:
        return []
    rows = {
        int(i)
        for episode in episodes
        for part in (episode.support, episode.query, episode.reliability)
        if part is not None
        for i in part
    }
    for report in job.reports:
        rows.update(report.extra_rows(job))
    return [job.table.ids[i] for i in sorted(rows)]


def extract_for_episodes(job: PreparedJob) -> tuple[PreparedJob, list[Episode], ExtractionReport]:
    """Draw the episodes (they depend only on labels and splits), then extract only the clips they use.

    Clips that cannot be decoded (on_bad_clip=skip) leave the table, listed in skipped_clips.tsv; the
    episodes are then drawn again on the smaller table and any newly needed clips extracted, until
    no clip is skipped.
    """
    settings = job.extraction
    total = ExtractionReport()
    while True:
        episodes = job.protocol.episodes(job.pools)
        needed = needed_clips(job, episodes)
        report = extract_missing(
            job.backbone,
            job.table,
            job.prompt,
            job.cache,
            settings.trainer,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            on_bad_clip=settings.on_bad_clip,
            on_long_clip=settings.on_long_clip,
            clip_ids=needed,
        )
        total.add(report)
        total.needed = len(needed)
        if not report.skipped:
            break
        log.warning(
            "skipped %d clips that could not be decoded; listed in %s",
            len(report.skipped),
            job.out_dir / "skipped_clips.tsv",
        )
        job = job.without(set(report.skipped))
    total.write_skips(job.out_dir / "skipped_clips.tsv")
    return job, episodes, total


def count_causes(job: PreparedJob) -> list[str]:
    """The settings of `job` that can leave a class with other than `shots` support clips, for the notes."""
    causes = []
    if getattr(job.protocol, "support_draw", None) == "all":
        causes.append("protocol.support_draw=all")
    if getattr(job.protocol, "at_most", False):
        causes.append("protocol.at_most=true")
    return causes + [cause for report in job.reports for cause in report.support_causes()]


def merge(job: PreparedJob, episodes: list, outputs: list[ReportOutput]) -> tuple[list, list, dict[str, Any]]:
    """Results rows (episodic methods summarised with the paired difference to the baseline, then the
    reports' own rows), episodes.csv rows, and the reports' extras, in report order."""
    per_method: dict[str, list[float]] = {}
    episode_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for out in outputs:
        per_method.update(out.per_method)
        episode_rows.extend(out.episode_rows)
        rows.extend(out.rows)
        notes = [*extra.get("notes", []), *out.extra.get("notes", [])]  # every report's notes, none overwritten
        extra.update(out.extra)
        if notes:
            extra["notes"] = notes
    summary = result_rows(
        job.shots, per_method, episode_rows, episodes[0].ways, job.protocol.reported_queries(episodes), job.baseline
    )
    # every row says what its support sets were, when not `shots` clean clips per class (calm.protocols.row_marks)
    fields, notes = support_marks(episodes, job.shots, count_causes(job))
    shared_fields, shared_notes = shared_file_marks(job.table, episodes)
    fields, notes = fields | shared_fields, notes + shared_notes
    if notes:
        extra["notes"] = [*extra.get("notes", []), *notes]
    return [row | fields for row in summary + rows], episode_rows, extra


__all__ = ["run_job"]
