"""Qwen2.5-Omni-7B, thinker only: per-head outputs of every thinker LM layer at the last real prompt token.

`modality: audio` gives the thinker the clip's audio; `modality: audio_video` gives it the clip's video
frames (decoded with PyAV at `fps`) with the audio of the same file interleaved in time, as Qwen2.5-Omni
does with `use_audio_in_video=True` (TMRoPE: both streams on one timeline). The prompt is the chat
template with the audio (or the video) first, then the text, generation prompt added. The talker and
the vocabulary projection never run; the audio and vision towers are never hooked.

audio_video needs the frames in `collate`: the backbone says `needs_video = True`, `load_video(path)`
decodes a clip's mp4, and `collate(waves, prompts, videos=[...])` takes one frame array per clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch import nn

from calm.backbones.audio_lm import ONE_WHISPER_WINDOW, AudioLMBackbone, Family
from calm.backbones.qwen2_audio import padded_for_generation
from calm.errors import ConfigError, DataError
from calm.storage.file_digests import FileDigests

MODALITIES = ("audio", "audio_video")
DEFAULT_FPS = 2.0  # what Qwen2_5OmniProcessor assumes when the checkpoint saves no fps


QWEN2_5_OMNI = Family(
    name="qwen2_5_omni",
    model_class="Qwen2_5OmniThinkerForConditionalGeneration",
    hub_id="Qwen/Qwen2.5-Omni-7B",
    license="Apache-2.0",
    audio=ONE_WHISPER_WINDOW,
    sub_config="thinker_config",
    position_ids=False,
    import_hint="install torchvision (the build matching your torch): Qwen2.5-Omni's video processor needs it",
    call_kwargs={"padding": True, "padding_side": "left"},
)


class Qwen2_5OmniBackbone(AudioLMBackbone):
    """The Qwen2.5-Omni thinker (or a tiny random copy: `tiny_model`); `load()` reads the weights."""

    spec = QWEN2_5_OMNI

    def __init__(self, *, modality: str = "audio", fps: float | None = None, **settings: Any) -> None:
        """`settings`: AudioLMBackbone's (name, hub_id, path, layers, precision, ...)."""
        if modality not in MODALITIES:
            raise ConfigError(f"backbone.modality={modality!r}", f"choose one of {list(MODALITIES)}")
        if fps is not None and not fps > 0:
            raise ConfigError(f"backbone.fps={fps}", "use a positive frame rate, or null for the processor's")
        super().__init__(**settings)
        self.modality = modality
        self._fps = fps

    @property
    def needs_video(self) -> bool:
        """Whether `collate` needs each clip's frames (`load_video(clip.video_path)`)."""
        return self.modality == "audio_video"

    @property
    def fps(self) -> float:
        """Frames per second sampled from the video: backbone.fps, else the video processor's, else 2."""
        if self._fps is not None:
            return float(self._fps)
        video = getattr(self.processor, "video_processor", None)
        return float(getattr(video, "fps", None) or DEFAULT_FPS)

    @property
    def prompt_media(self) -> str:
        """The clip's content item in the prompt: its audio, or its video (whose audio is interleaved into it)."""
        return "audio" if self.modality == "audio" else "video"

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        fields = super().key_fields(digests)
        fields["modality"] = self.modality
        if self.modality == "audio_video":
            video = self.processor.video_processor
            # Qwen2_5OmniProcessor resizes frames to its own pixel bounds, whatever the video processor saved.
            size = (getattr(self.processor, "videos_kwargs", None) or {}).get("size") or video.size
            fields["video"] = {
                "fps": self.fps,
                "decoder": "PyAV",
                "sampling": "last frame at or before k/fps, round(duration*fps)",
                "audio_in_video": "interleaved",
                "seconds_per_chunk": self.config.seconds_per_chunk,
                "position_id_per_seconds": self.config.position_id_per_seconds,
                "size": {k: v for k, v in dict(size).items() if v is not None} if size is not None else None,
                "patch_size": video.patch_size,
                "temporal_patch_size": video.temporal_patch_size,
                "merge_size": video.merge_size,
            }
        else:
            fields["video"] = None
        return fields

    def load(self) -> nn.Module:
        """The shared load (head count and audio token checked), then the video token checked too."""
        model = super().load()
        if self.processor.video_token_id != self.config.video_token_id:
            raise ConfigError(
                f"the tokenizer's {self.processor.video_token} is id {self.processor.video_token_id}, "
                f"the model expects {self.config.video_token_id}",
                "use the processor saved with these weights",
            )
        return model

    def generation_waves(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [padded_for_generation(wave, self.sample_rate) for wave in waves]

    def load_video(self, path: Path) -> np.ndarray:
        """The clip's frames as (frames, height, width, 3) uint8 RGB, sampled at `fps` with PyAV.

        Frame k is the last decoded frame shown at or before k/fps; round(duration*fps) frames, at least one.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"video file not found: {path}", "check dataset.root, or re-download the dataset")
        fps = self.fps
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DataError(
                        f"{path} has no video stream", "use backbone.modality=audio, or run with on_bad_clip=skip"
                    )
                stream = container.streams.video[0]
                if stream.duration is not None and stream.time_base is not None:
                    duration = float(stream.duration * stream.time_base)
                elif container.duration is not None:
                    duration = container.duration / av.time_base
                else:
                    duration = 0.0
                wanted = max(1, round(duration * fps))
                frames: list[np.ndarray] = []
                shown = None
                for index, frame in enumerate(container.decode(stream)):
                    at = frame.time if frame.time is not None else index / float(stream.average_rate or fps)
                    while shown is not None and len(frames) < wanted and at > len(frames) / fps + 1e-6:
                        frames.append(shown.to_ndarray(format="rgb24"))
                    if len(frames) >= wanted:
                        break
                    shown = frame
                if shown is not None:
                    last = shown.to_ndarray(format="rgb24")
                    while len(frames) < wanted:
                        frames.append(last)
        except av.error.FFmpegError as err:
            raise DataError(f"cannot decode video file {path}: {err}", "replace the file, or on_bad_clip=skip") from err
        if not frames:
            raise DataError(f"video file {path} has no frames", "replace the file, or run with on_bad_clip=skip")
        return np.stack(frames)

    def collate(
        self, waves: list[np.ndarray], prompts: list[str], videos: list[np.ndarray] | None = None
    ) -> dict[str, torch.Tensor]:
        """Left-padded token ids (the thinker computes its multimodal RoPE positions over real tokens only).

        audio_video: `videos[i]` are clip i's frames (`load_video`), `waves[i]` the audio of the same file.
        """
        texts = [self.render_prompt(prompt) for prompt in prompts]
        kwargs: dict[str, Any] = {}
        if self.modality == "audio_video":
            if videos is None or len(videos) != len(waves):
                raise ConfigError(
                    f"backbone.modality=audio_video needs one frame array per clip, got "
                    f"{'none' if videos is None else len(videos)} for {len(waves)} clips",
                    "pass videos=[backbone.load_video(clip.video_path) ...] to collate (clips need a video_path)",
                )
            kwargs = {
                "videos": [np.asarray(v) for v in videos],
                "audio_from_video_indices": list(range(len(waves))),
                "load_audio_from_video": True,
                "fps": self.fps,
                "do_sample_frames": False,
            }
        inputs = self.processor(
            text=texts,
            audio=list(waves),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            **kwargs,
        )
        mask = inputs["attention_mask"]
        columns = torch.arange(mask.shape[1])
        batch = {
            "input_ids": inputs["input_ids"],
            "attention_mask": mask,
            "input_features": inputs["input_features"],
            "feature_attention_mask": inputs["feature_attention_mask"],
            "last_index": (columns * mask).argmax(-1),
        }
        if self.modality == "audio_video":
            batch["pixel_values_videos"] = inputs["pixel_values_videos"]
            batch["video_grid_thw"] = inputs["video_grid_thw"]
            batch["video_second_per_grid"] = torch.as_tensor(inputs["video_second_per_grid"], dtype=torch.float32)
        return batch

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The thinker's base model (audio/vision towers + LM) only: the LM head is never computed."""
        assert self.model is not None and self._capture is not None, "call load() first"
        base = self.model.model
        self._capture.set_positions(last_index=batch["last_index"])
        extra = {}
        if "pixel_values_videos" in batch:
            extra = {
                "pixel_values_videos": batch["pixel_values_videos"],
                "video_grid_thw": batch["video_grid_thw"],
                "video_second_per_grid": batch["video_second_per_grid"],
                "use_audio_in_video": True,
            }
        with self._capture.capturing():
            base(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                input_features=batch["input_features"],
                feature_attention_mask=batch["feature_attention_mask"],
                use_cache=False,
                **extra,
            )
        return self._capture.stacked()
