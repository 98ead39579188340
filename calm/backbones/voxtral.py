"""Voxtral (Mistral): a Whisper-style encoder over 30 s windows (each clip padded to a multiple of 30 s by
mistral-common, 375 audio tokens per window) and a Llama language model.

What is its own: the prompt is built by the mistral-common (Tekken) tokenizer's instruct format, not by a
Jinja chat template, and the processor takes audio only inside the conversation. So this module renders
the prompt and calls the processor its way; hooks, batching, positions, loading and generation are the
shared adapter's.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import soundfile
import torch

from calm.backbones.audio_lm import AudioInput, AudioLMBackbone, Family, checked_rendering
from calm.errors import ConfigError


def wav_base64(wave: np.ndarray, sample_rate: int) -> str:
    """A clip as base64 of a float WAV: the only way VoxtralProcessor takes in-memory audio, and lossless."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


VOXTRAL = Family(
    name="voxtral",
    model_class="VoxtralForConditionalGeneration",
    hub_id="mistralai/Voxtral-Mini-3B-2507",
    license="Apache-2.0",
    audio=AudioInput(
        "whole clip, padded to a multiple of 30 s (375 audio tokens per 30 s)", None, "zeros_to_30s_multiple"
    ),
    extras=("mistral-common",),
)


class VoxtralBackbone(AudioLMBackbone):
    """Voxtral Mini (or a tiny random copy); its prompts go through mistral-common."""

    spec = VOXTRAL

    def needs_extras(self) -> bool:
        """Always: the tiny copy's tokenizer is mistral-common's too."""
        return True

    def conversation(self, prompt: str, wave: np.ndarray) -> list[dict[str, Any]]:
        """One user turn: the clip, then the prompt text (mistral-common adds [/INST], the generation prompt)."""
        return [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "base64": wav_base64(wave, self.sample_rate)},
                    {"type": "text", "text": prompt},
                ],
            }
        ]

    def template(self) -> str:
        """No Jinja template: mistral-common's instruct tokenizer (class and version) builds the turns."""
        if self.chat_template:
            raise ConfigError(
                "voxtral builds its prompt with mistral-common's instruct tokenizer, not a chat template",
                "set backbone.chat_template=null",
            )
        tokenizer = self.processor.tokenizer.tokenizer
        return f"mistral-common {type(tokenizer.instruct_tokenizer).__name__} {tokenizer.version.value}"

    def render_prompt(self, text: str) -> str:
        """The prompt as the model reads it, one 30 s window of silence as the clip, its run of [AUDIO]
        tokens (375 per window, more for longer clips) shown as one placeholder."""
        self.template()
        tokenizer = self.processor.tokenizer
        silence = np.zeros(self.sample_rate, dtype=np.float32)
        ids = tokenizer.apply_chat_template([self.conversation(text, silence)], tokenize=True, return_dict=True)[
            "input_ids"
        ][0]
        audio = self.processor.audio_token_id
        kept = [token for i, token in enumerate(ids) if token != audio or i == 0 or ids[i - 1] != audio]
        return checked_rendering(tokenizer.decode(kept, skip_special_tokens=False), self.processor.audio_token, text)

    def processed(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids (left padded), attention mask and the mel windows of every clip, each clip padded to a
        multiple of 30 s on its own, so a clip's windows never depend on the rest of the batch."""
        conversations = [self.conversation(prompt, wave) for wave, prompt in zip(waves, prompts, strict=True)]
        inputs = self.processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt")
        return dict(inputs)
