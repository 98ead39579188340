"""The one rule for what a reused result is computed from, besides the settings that name it.

Three things are reused: activation rows (`calm.cache`), generated answers (`calm.baselines`) and
finished jobs (`calm.run.sweeps`). Each is keyed by the same content digests:

- `model_key_fields`: the backbone's key fields (its weights, config, processor and tokenizer files by
  content digest, or a hub id and revision) and, when the backbone reads the prompt text, the prompt's
  settings. It keys a cache folder, an answer store, and (by its digest, the cache key) a job's record;
- `row_inputs`: per clip, the content digest of the files it is decoded from and of its rendered prompt
  text. It is stored with every row and every answer; a job's record holds `ClipTable.digest`, made of
  the same file digests with the labels and splits that (with the prompt settings) render those texts.

So weights changed in place, another `CALM_ASSETS` folder, an overwritten clip or another prompt text
reach all three: none reuses a result whose inputs changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from calm.backbones.base import Backbone
from calm.cache import RowInputs
from calm.cache.index import media_digest, text_digest
from calm.data.prompts import Prompt
from calm.data.table import ClipTable
from calm.storage.digests import digest
from calm.storage.file_digests import FileDigests


def model_key_fields(backbone: Backbone, prompt: Prompt, digests: FileDigests | None = None) -> dict[str, Any]:
    """What every row, answer and job of `backbone` under `prompt` shares: the backbone's key fields (its
    weights by content, their digests remembered in `digests`) and the prompt's settings when the
    backbone reads the prompt text. What else each row or answer depends on is stored with it
    (`row_inputs`)."""
    fields = {"backbone": backbone.key_fields(digests)}
    if backbone.uses_prompt_text:
        fields["prompt"] = prompt.key_fields()
    return fields


def job_inputs(backbone: Backbone, prompt: Prompt, table: ClipTable, digests: FileDigests) -> dict[str, str]:
    """What a finished job's numbers are computed from besides its settings, stored in its record: the
    digest of `model_key_fields` (its rows' cache key) and of its clip table."""
    return {"model": digest(model_key_fields(backbone, prompt, digests)), "table": table.digest(digests)}


def row_inputs(
    backbone: Backbone, table: ClipTable, prompt: Prompt, digests: FileDigests, clip_ids: Sequence[str] | None = None
) -> dict[str, RowInputs]:
    """What each clip's row is computed from: the content digest of the files it is decoded from (the
    audio file; also the video file when the backbone reads frames) and of the rendered prompt text
    when the backbone reads it. File digests are remembered by path, size and mtime in `digests`, so
    an unchanged clip is not read again; a file that cannot be read gets an input no row matches (the
    header check then reports or skips it)."""
    needs_video = getattr(backbone, "needs_video", False)
    by_id = {clip.id: clip for clip in table.clips}
    clips = table.clips if clip_ids is None else [by_id[cid] for cid in clip_ids]
    files = {clip.id: [clip.audio_path] for clip in clips}
    for clip in clips:
        if needs_video and clip.video_path is not None and clip.video_path != clip.audio_path:
            files[clip.id].append(clip.video_path)
    flat = [path for paths in files.values() for path in paths]
    shas = iter(digests.of_many(flat, missing_ok=True))
    inputs = {}
    for clip in clips:
        clip_shas = [next(shas) for _ in files[clip.id]]
        audio = media_digest([sha or "unreadable" for sha in clip_shas])
        text = text_digest(prompt.text_for(clip, table)) if backbone.uses_prompt_text else ""
        inputs[clip.id] = RowInputs(audio, text)
    return inputs
