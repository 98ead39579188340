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
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from transformers import (
    VoxtralConfig,
    VoxtralEncoderConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
)

from calm.backbones.audio_lm import AudioLMBackbone, Family, checked_rendering, require_extras
from calm.backbones.tiny import (
    TINY_TEXT,
    TINY_WHISPER_ENCODER,
    save_tiny,
    tiny_text_sizes,
    whisper_features,
)
from calm.errors import ConfigError

# Tekken's special tokens in the order of Mistral's tokenizer files: VoxtralProcessor expects [AUDIO] at id 24.
TEKKEN_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                   "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                   "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
                   "[ARGS]", "[CALL_ID]", "<SPECIAL_22>", "<SPECIAL_23>", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]")
TINY_NUM_SPECIAL = 32
# tiktoken's pre-tokenizer split (the pattern of Mistral's Tekken files).
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                  r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Voxtral's audio framing: 16 kHz, 128 mel bins every 10 ms, 12.5 audio tokens per second, 30 s windows.
VOXTRAL_AUDIO = {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": 30.0,
                 "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}}
# The projector stacks 4 encoder frames (intermediate_size = 4 x hidden) into one audio token.
TINY_VOXTRAL_ENCODER = {**TINY_WHISPER_ENCODER, "intermediate_size": 4 * TINY_WHISPER_ENCODER["hidden_size"],
                        "num_mel_bins": 128, "max_source_positions": 1500}


def write_tiny_tekken(path: Path) -> Path:
    """A Tekken tokenizer file made in code: every byte one token (no merges), Voxtral's special tokens, its
    audio framing. The real file has a 131k-token vocabulary; the ids of the special tokens are the same."""
    specials = [*TEKKEN_SPECIALS, *(f"<SPECIAL_{i}>" for i in range(len(TEKKEN_SPECIALS), TINY_NUM_SPECIAL))]
    model = {
        "config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": 256, "default_vocab_size": 256 + TINY_NUM_SPECIAL,
                   "default_num_special_tokens": TINY_NUM_SPECIAL, "version": "v7"},
        "vocab": [{"rank": b, "token_bytes": base64.b64encode(bytes([b])).decode(), "token_str": None}
                  for b in range(256)],
        "special_tokens": [{"rank": i, "token_str": t, "is_control": True} for i, t in enumerate(specials)],
        "audio": VOXTRAL_AUDIO,
        "version": 1,
        "type": "Tekken",
    }
    path.write_text(json.dumps(model))
    return path


def build_tiny_voxtral(dest: Path, seed: int = 0) -> Path:
    """A tiny random Voxtral: real config, model and processor classes, a tiny Tekken tokenizer through
    transformers' MistralCommonBackend (mistral-common needed, as for the real checkpoint)."""
    require_extras(VOXTRAL)
    from transformers.tokenization_mistral_common import MistralCommonBackend

    with tempfile.TemporaryDirectory() as source:
        tokenizer = MistralCommonBackend(tokenizer_path=str(write_tiny_tekken(Path(source) / "tekken.json")))
        processor = VoxtralProcessor(feature_extractor=whisper_features(), tokenizer=tokenizer)
        text = {"model_type": "llama", **tiny_text_sizes(tokenizer), "bos_token_id": tokenizer.bos_token_id}
        config = VoxtralConfig(audio_config=VoxtralEncoderConfig(**TINY_VOXTRAL_ENCODER), text_config=text,
                               audio_token_id=processor.audio_token_id)
        config.calm_tiny_seed = seed
        return save_tiny(VoxtralForConditionalGeneration, config, processor, dest, seed)


def wav_base64(wave: np.ndarray, sample_rate: int) -> str:
    """A clip as base64 of a float WAV: the only way VoxtralProcessor takes in-memory audio, and lossless."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


VOXTRAL = Family(
    name="voxtral", model_class="VoxtralForConditionalGeneration", hub_id="mistralai/Voxtral-Mini-3B-2507",
    license="Apache-2.0", audio="whole clip, padded to a multiple of 30 s (375 audio tokens per 30 s)",
    extras=("mistral-common",), window=None, audio_padding="zeros_to_30s_multiple", tiny_text=TINY_TEXT,
    build_tiny=build_tiny_voxtral,
)


class VoxtralBackbone(AudioLMBackbone):
    """Voxtral Mini (or its tiny random copy, `tiny=True`); its prompts go through mistral-common."""

    spec = VOXTRAL

    def needs_extras(self) -> bool:
        """Always: the tiny copy's tokenizer is mistral-common's too."""
        return True

    def conversation(self, prompt: str, wave: np.ndarray) -> list[dict[str, Any]]:
        """One user turn: the clip, then the prompt text (mistral-common adds [/INST], the generation prompt)."""
        return [{"role": "user", "content": [{"type": "audio", "base64": wav_base64(wave, self.sample_rate)},
                                             {"type": "text", "text": prompt}]}]

    def template(self) -> str:
        """No Jinja template: mistral-common's instruct tokenizer (class and version) builds the turns."""
        if self.chat_template:
            raise ConfigError("voxtral builds its prompt with mistral-common's instruct tokenizer, not a chat template",
                              "set backbone.chat_template=null")
        tokenizer = self.processor.tokenizer.tokenizer
        return f"mistral-common {type(tokenizer.instruct_tokenizer).__name__} {tokenizer.version.value}"

    def render_prompt(self, text: str) -> str:
        """The prompt as the model reads it, one 30 s window of silence as the clip, its run of [AUDIO]
        tokens (375 per window, more for longer clips) shown as one placeholder."""
        self.template()
        tokenizer = self.processor.tokenizer
        silence = np.zeros(self.sample_rate, dtype=np.float32)
        ids = tokenizer.apply_chat_template([self.conversation(text, silence)], tokenize=True,
                                            return_dict=True)["input_ids"][0]
        audio = self.processor.audio_token_id
        kept = [token for i, token in enumerate(ids) if token != audio or i == 0 or ids[i - 1] != audio]
        return checked_rendering(tokenizer.decode(kept, skip_special_tokens=False), self.processor.audio_token, text)

    def processed(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids (left padded), attention mask and the mel windows of every clip, each clip padded to a
        multiple of 30 s on its own, so a clip's windows never depend on the rest of the batch."""
        conversations = [self.conversation(prompt, wave) for wave, prompt in zip(waves, prompts, strict=True)]
        inputs = self.processor.apply_chat_template(conversations, tokenize=True, return_dict=True,
                                                    return_tensors="pt")
        return dict(inputs)
