"""What one clip's activation row (or stored answer) is computed from: the content digests of the files
it is decoded from and of its rendered prompt text. The activation cache (`calm.extract`) and the
answer stores (`calm.baselines`) both key their entries by it, so neither reuses a result whose inputs
changed."""

from __future__ import annotations

from collections.abc import Sequence

from calm.backbones.base import Backbone
from calm.cache import RowInputs
from calm.cache.index import media_digest, text_digest
from calm.data.prompts import Prompt
from calm.data.table import ClipTable
from calm.file_digests import FileDigests


def row_inputs(backbone: Backbone, table: ClipTable, prompt: Prompt, digests: FileDigests,
               clip_ids: Sequence[str] | None = None) -> dict[str, RowInputs]:
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
