"""Generation shared by the zero-shot baseline and pseudo-labelling: where the model runs and the
batched "load the model, read the clips, generate" loop, written once so both callers place the
model the same way (on the device `trainer.accelerator` asks for, never a GPU under accelerator=cpu).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.baselines.answer_store import AnswerStore
from calm.data.audio import load_audio
from calm.data.prompts import ClipPrompt
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError

T = TypeVar("T")
GPU_ACCELERATORS = ("gpu", "cuda")


def generation_device(trainer: Mapping[str, Any]) -> torch.device:
    """The device for generation from the `trainer` config, the same choice Lightning makes for extraction:
    cpu for accelerator=cpu, the (first listed) GPU for gpu/cuda, and for auto a GPU when there is one."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator not in (*GPU_ACCELERATORS, "auto"):
        raise ConfigError(
            f"generation (zero-shot, pseudo-labels) cannot run on trainer.accelerator={accelerator}",
            "set trainer.accelerator to cpu, gpu or auto",
        )
    if not torch.cuda.is_available():
        if accelerator == "auto":
            return torch.device("cpu")
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible",
            "run on a machine with a GPU, or set trainer.accelerator=cpu",
        )
    devices = trainer.get("devices")
    index = devices[0] if isinstance(devices, Sequence) and not isinstance(devices, str) and devices else 0
    return torch.device("cuda", int(index))


def place_model(backbone: Backbone, device: torch.device) -> None:
    """Load the model if it is not yet, and put it on `device` (extraction may have left it elsewhere)."""
    if getattr(backbone, "model", None) is None:
        backbone.load()
    backbone.model.to(device)


def generate_in_batches(
    backbone: Backbone,
    table: ClipTable,
    prompt: ClipPrompt,
    clips: Sequence[Clip],
    batch_size: int,
    device: torch.device,
    generate: Callable[[list[np.ndarray], list[str], list[Clip]], Sequence[T]],
) -> Iterator[tuple[list[Clip], Sequence[T]]]:
    """Each batch of `clips` with what `generate(waves, prompt texts, clips)` returns for it, in clip
    order; the model is loaded and placed only when there is a clip to answer."""
    if not clips:
        return
    place_model(backbone, device)
    for start in range(0, len(clips), batch_size):
        batch = list(clips[start : start + batch_size])
        waves = [load_audio(c.audio_path, backbone.sample_rate) for c in batch]
        yield batch, generate(waves, [prompt.text_for(c, table) for c in batch], batch)


def stored_or_generated(
    backbone: Backbone,
    table: ClipTable,
    prompt: ClipPrompt,
    clips: Sequence[Clip],
    store: AnswerStore | None,
    **generation: Any,
) -> tuple[dict[str, T], int]:
    """What `generate` answers for each of `clips` (by id), and how many clips were generated: `store`'s
    answer where it has one made from the clip's current inputs (`AnswerStore.current`), else generated
    (`generate_in_batches`, with its `batch_size`, `device` and `generate` given as `generation`) and
    added to the store batch by batch, so an interrupted job loses one batch at most."""
    inputs = store.inputs(backbone, table, prompt, [c.id for c in clips]) if store is not None else {}
    answers: dict[str, T] = dict(store.current(inputs)) if store is not None else {}
    todo = list({c.id: c for c in clips if c.id not in answers}.values())  # each clip once
    for batch, generated in generate_in_batches(backbone, table, prompt, todo, **generation):
        new = {c.id: answer for c, answer in zip(batch, generated, strict=True)}
        answers.update(new)
        if store is not None:
            store.add(new, inputs)
    return {c.id: answers[c.id] for c in clips}, len(todo)
