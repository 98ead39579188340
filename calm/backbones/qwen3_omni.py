"""Qwen3-Omni, thinker only: GQA attention heads (MoE only in the MLP), a chunked audio encoder (no 30 s
padding: clips are padded to the batch's longest) and multimodal RoPE positions the model works out from
the attention mask. Its own, besides its description and tiny random copy: the audio tower runs one clip
at a time (transformers sizes its attention windows by the batch's longest chunk, so a short clip's audio
embeddings would depend on the other clips of its batch); the language model then runs on the batch."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Qwen2VLImageProcessor,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerForConditionalGeneration,
)
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
    Qwen3OmniMoeAudioEncoderConfig,
    Qwen3OmniMoeTextConfig,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeVisionEncoderConfig,
)

from calm.backbones.audio_lm import AudioLMBackbone, Family
from calm.backbones.qwen3_asr import AUDIO_MARKUP, QWEN3_AUDIO_TOKENS, TINY_CHUNKED_ENCODER
from calm.backbones.tiny import (
    TINY_INIT_RANGE,
    TINY_TEXT,
    chatml_template,
    save_tiny,
    special_tokens_tokenizer,
    tiny_text_sizes,
    whisper_features,
)

VISION_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}
TINY_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
               "deepstack_visual_indexes": [1], "num_position_embeddings": 64, "initializer_range": TINY_INIT_RANGE}
TINY_MOE = {"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}
# Interleaved multimodal RoPE over head_dim 16 (the real model: [24, 20, 20] of 128).
TINY_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3], "interleaved": True}


def build_tiny_qwen3_omni(dest: Path, seed: int = 0) -> Path:
    """A tiny random Qwen3-Omni thinker: real config classes (MoE text model, chunked audio encoder, vision
    tower), the real thinker and processor classes (Whisper features, Qwen2-VL image/video processors)."""
    from transformers import Qwen2VLVideoProcessor  # needs torchvision

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>",
                "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = special_tokens_tokenizer(specials, "<|im_end|>", "<|endoftext|>", chatml_template(AUDIO_MARKUP),
                                         named={**QWEN3_AUDIO_TOKENS, **VISION_TOKENS})
    vision = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
              "size": {"shortest_edge": 64 * 64, "longest_edge": 128 * 128}}
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**vision), video_processor=Qwen2VLVideoProcessor(**vision),
        feature_extractor=whisper_features(), tokenizer=tokenizer, chat_template=tokenizer.chat_template)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=Qwen3OmniMoeAudioEncoderConfig(**TINY_CHUNKED_ENCODER),
        vision_config=Qwen3OmniMoeVisionEncoderConfig(**TINY_VISION),
        text_config=Qwen3OmniMoeTextConfig(**tiny_text_sizes(tokenizer, rope_parameters=TINY_ROPE, **TINY_MOE)),
        audio_token_id=ids("<|audio_pad|>"), image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        audio_start_token_id=ids("<|audio_start|>"), vision_start_token_id=ids("<|vision_start|>"),
        user_token_id=ids("<|im_start|>"), initializer_range=TINY_INIT_RANGE)
    config.calm_tiny_seed = seed
    return save_tiny(Qwen3OmniMoeThinkerForConditionalGeneration, config, processor, dest, seed)


QWEN3_OMNI = Family(
    name="qwen3_omni", model_class="Qwen3OmniMoeThinkerForConditionalGeneration",
    hub_id="Qwen/Qwen3-Omni-30B-A3B-Instruct", license="Apache-2.0",
    audio="whole clip, padded to the batch's longest (chunked encoder)", sub_config="thinker_config", window=None,
    position_ids=False, call_kwargs={"padding": True}, audio_padding="zeros_to_longest_in_batch", per_clip_features=True,
    import_hint="install torchvision (the build matching your torch): Qwen3-Omni's video processor needs it",
    tiny_text=TINY_TEXT, build_tiny=build_tiny_qwen3_omni,
)


class Qwen3OmniBackbone(AudioLMBackbone):
    """The Qwen3-Omni thinker (or its tiny random copy, `tiny=True`); talker and code2wav are never loaded."""

    spec = QWEN3_OMNI

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Audio embeddings clip by clip, merged at the audio placeholders; then one batched LM pass (the
        thinker works out its multimodal RoPE positions from the ids, the mask and the audio lengths)."""
        assert self.model is not None and self._capture is not None, "call load() first"
        base = self.base_model()
        ids, features, frames = batch["input_ids"], batch["input_features"], batch["feature_attention_mask"]
        embeds = base.get_input_embeddings()(ids)
        for row in range(ids.shape[0]):
            audio = base.get_audio_features(features[row:row + 1], frames[row:row + 1], return_dict=True)
            at = ids[row] == self.config.audio_token_id
            embeds[row, at] = audio.last_hidden_state.to(embeds.dtype)
        self._capture.set_positions(last_index=batch["last_index"])
        with self._capture.capturing():
            base(input_ids=ids, inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                 feature_attention_mask=frames, use_cache=False)
        return self._capture.stacked()
