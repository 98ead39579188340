"""Qwen3-Omni, thinker only: GQA attention heads (MoE only in the MLP), a chunked audio encoder (no 30 s
padding: clips are padded to the batch's longest) and multimodal RoPE positions the model works out from
the attention mask. Its own, besides its description: the audio tower runs one clip
at a time (transformers sizes its attention windows by the batch's longest chunk, so a short clip's audio
embeddings would depend on the other clips of its batch); the language model then runs on the batch."""

from __future__ import annotations

import torch

from calm.backbones.audio_lm import WHOLE_CLIP, AudioLMBackbone, Family

QWEN3_OMNI = Family(
    name="qwen3_omni",
    model_class="Qwen3OmniMoeThinkerForConditionalGeneration",
    hub_id="Qwen/Qwen3-Omni-30B-A3B-Instruct",
    license="Apache-2.0",
    audio=WHOLE_CLIP,
    sub_config="thinker_config",
    position_ids=False,
    call_kwargs={"padding": True},
    import_hint="install torchvision (the build matching your torch): Qwen3-Omni's video processor needs it",
)


class Qwen3OmniBackbone(AudioLMBackbone):
    """The Qwen3-Omni thinker; talker and code2wav are never loaded."""

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
            audio = base.get_audio_features(features[row : row + 1], frames[row : row + 1], return_dict=True)
            at = ids[row] == self.config.audio_token_id
            embeds[row, at] = audio.last_hidden_state.to(embeds.dtype)
        self._capture.set_positions(last_index=batch["last_index"])
        with self._capture.capturing():
            base(
                input_ids=ids,
                inputs_embeds=embeds,
                attention_mask=batch["attention_mask"],
                feature_attention_mask=frames,
                use_cache=False,
            )
        return self._capture.stacked()
