"""Padding-aware Qwen2-Audio encoder: run the audio tower on the batch's real mel frames only.

The processor pads every clip's log-mel features to the 30 s window (3,000 frames). Inside the
encoder nothing reads past a clip's real length L except the convolutions' one-frame look-ahead:

* conv1 (kernel 3, stride 1, padding 1) output t reads mel frames t-1..t+1;
* conv2 (kernel 3, stride 2, padding 1) output j reads conv1 outputs 2j-1..2j+1, so mel frames
  2j-2..2j+2. The real encoder positions are j < n = (L-1)//2 + 1, hence at most mel frame L+1;
* attention masks keys at positions >= n (queries there are computed but never used);
* the 2x average pool keeps (n-2)//2 + 1 outputs, built from positions < n only;
* the projector works per position, and the merge keeps each clip's first (n-2)//2 + 1 outputs.

So cutting the mel input to T = max L + 2 frames (rounded up to the encoder's total stride of 4,
never past the padded width), taking the first T/2 rows of the positional table and building the
attention mask over T/2 positions, leaves every kept audio feature unchanged. The number of
`<|AUDIO|>` placeholders the processor inserts depends on each clip's real length only, so the
language model sees the same input sequence.

This module recomputes the tower's forward with the tower's own submodules (the tower itself
refuses inputs that are not 3,000 frames wide) and merges the features into the token
embeddings the way `Qwen2AudioModel` does when the processor has expanded the placeholders.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from calm.errors import ConfigError

# conv2 stride (2) x average-pool stride (2): one audio token per 4 mel frames.
ENCODER_STRIDE = 4
# Mel frames past the real length that the convolutions read for the last real position.
LOOK_AHEAD = 2


def cut_width(real_frames: torch.Tensor, full_width: int, stride: int = ENCODER_STRIDE) -> int:
    """Mel frames to keep for a batch whose clips have `real_frames` real frames each."""
    longest = int(real_frames.max()) if real_frames.numel() else 0
    width = -(-(longest + LOOK_AHEAD) // stride) * stride
    return min(max(width, stride), full_width)


def cut_mel(input_features: torch.Tensor, feature_attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, mel, frames) features and their (batch, frames) mask, cut to the batch's longest clip + 2."""
    width = cut_width(feature_attention_mask.sum(-1), input_features.shape[-1])
    return input_features[..., :width], feature_attention_mask[:, :width]


def check_tower(tower: nn.Module) -> None:
    """The cut is exact only for Whisper-style towers: conv stride 1 then 2, a 2x average pool."""
    parts = ("conv1", "conv2", "embed_positions", "layers", "avg_pooler", "layer_norm")
    missing = [p for p in parts if not hasattr(tower, p)]
    shape_ok = not missing and (
        tower.conv1.stride == (1,)
        and tower.conv1.kernel_size == (3,)
        and tower.conv1.padding == (1,)
        and tower.conv2.stride == (2,)
        and tower.conv2.kernel_size == (3,)
        and tower.conv2.padding == (1,)
        and getattr(tower.avg_pooler, "stride", None) in (2, (2,))
        and getattr(tower.avg_pooler, "kernel_size", None) in (2, (2,))
    )
    if not shape_ok:
        raise ConfigError(
            f"the audio tower {type(tower).__name__} is not a Qwen2-Audio encoder (conv stride 1/2, 2x pool)",
            "set backbone.encoder_cut=false for this model",
        )


def encode_audio(
    tower: nn.Module, input_features: torch.Tensor, feature_attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's forward on cut features: (batch, T/4, d_model) outputs and each clip's kept length."""
    check_tower(tower)
    if tower.training:
        raise RuntimeError("encode_audio runs the audio tower in eval mode only (no dropout, no layer drop)")
    features = input_features.to(dtype=tower.conv1.weight.dtype, device=tower.conv1.weight.device)
    mask = feature_attention_mask.to(features.device)
    feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))

    hidden = nn.functional.gelu(tower.conv1(features))
    hidden = nn.functional.gelu(tower.conv2(hidden)).permute(0, 2, 1)
    positions = hidden.shape[1]
    if positions > tower.embed_positions.weight.shape[0]:
        raise ValueError(
            f"{positions} encoder positions, the positional table has {tower.embed_positions.weight.shape[0]}"
        )
    hidden = hidden + tower.embed_positions.weight[:positions]

    real = torch.arange(positions, device=hidden.device)[None, :] < feat_lengths[:, None]
    attention_mask = create_bidirectional_mask(config=tower.config, inputs_embeds=hidden, attention_mask=real.long())
    for layer in tower.layers:
        hidden = layer(hidden, attention_mask)
        if isinstance(hidden, tuple):  # older layers return (hidden, attn_weights)
            hidden = hidden[0]
    hidden = tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
    hidden = tower.layer_norm(hidden)
    if int(out_lengths.max()) > hidden.shape[1]:
        raise RuntimeError(f"cut too short: {int(out_lengths.max())} audio tokens needed, {hidden.shape[1]} computed")
    return hidden, out_lengths


def merged_embeddings(
    model: nn.Module,
    input_ids: torch.Tensor,
    input_features: torch.Tensor,
    feature_attention_mask: torch.Tensor,
    cut: bool = True,
) -> torch.Tensor:
    """Token embeddings with each clip's audio features written over its `<|AUDIO|>` placeholders.

    `model` is the inner `Qwen2AudioModel` (audio_tower, multi_modal_projector, language_model).
    Same result as its own forward when the processor expanded the placeholders (one per audio token).
    """
    if cut:
        input_features, feature_attention_mask = cut_mel(input_features, feature_attention_mask)
    audio, lengths = encode_audio(model.audio_tower, input_features, feature_attention_mask)
    audio = model.multi_modal_projector(audio)
    keep = torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths.to(audio.device)[:, None]
    audio = audio[keep]
    embeds = model.get_input_embeddings()(input_ids)
    placeholders = input_ids == model.config.audio_token_id
    if int(placeholders.sum()) != audio.shape[0]:
        raise ValueError(
            f"{int(placeholders.sum())} audio placeholder tokens for {audio.shape[0]} audio features: "
            "the prompt was not expanded by this model's processor"
        )
    return embeds.masked_scatter(placeholders.unsqueeze(-1).to(embeds.device), audio.to(embeds.device, embeds.dtype))
