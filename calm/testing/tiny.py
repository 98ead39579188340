"""Tiny random versions of the real model classes, for tests and offline dry runs.

They use the real config, model, tokenizer, feature-extractor and processor classes with the real
special tokens and chat template, so every code path of the real backbone runs, in seconds, with
no download. The tokenizer is a byte-level BPE made in code: every byte one token, plus optional
merges that make given words single tokens (so a prompt can be tokenised about as compactly as by
Qwen's real 151k-token vocabulary, where common words are one token each).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioEncoderConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Config,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from calm.errors import ConfigError
from calm.storage.digests import chunks_sha256

# What the Qwen chat templates (Qwen2-Audio's, Qwen2.5-Omni's) share around their content items: a default
# system turn, then each turn's items in order, generation prompt added.
QWEN_TURNS_HEAD = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
)
QWEN_TURNS_TAIL = (
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)
# The chat template shipped with Qwen/Qwen2-Audio-7B-Instruct (chat_template.json).
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    + QWEN_TURNS_HEAD
    + "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n" + QWEN_TURNS_TAIL
)
QWEN2_AUDIO_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
TINY_AUDIO = {
    "d_model": 64,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}
# Larger than the real 0.02 so random activations are far from zero and tolerances mean something.
TINY_INIT_RANGE = 0.2


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode map (what the ByteLevel pre-tokenizer emits), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def word_merges(pieces: Sequence[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges (added to `vocab`) that build each pre-tokenised piece left to right into one token.

    Longer pieces go first, so their merges outrank a shorter piece's when the two overlap.
    """
    merges: list[tuple[str, str]] = []
    for piece in sorted(set(pieces), key=lambda p: (-len(p), p)):
        for end in range(1, len(piece)):
            pair, merged = (piece[:end], piece[end]), piece[: end + 1]
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append(pair)
    return merges


def byte_vocab(specials: Sequence[str]) -> dict[str, int]:
    """A byte-level vocabulary: every byte one token (GPT-2's alphabet, in byte order), then `specials` in order."""
    vocab = {char: i for i, char in enumerate(_byte_alphabet())}
    for token in specials:
        vocab[token] = len(vocab)
    return vocab


def byte_level_pieces(text: str) -> list[str]:
    """`text` split as Qwen2's byte-level pre-tokenizer splits it (words with their leading space)."""
    splitter = tiny_qwen2_tokenizer().backend_tokenizer.pre_tokenizer
    return [piece for piece, _ in splitter.pre_tokenize_str(text)]


def tiny_qwen2_tokenizer(words: Sequence[str] = ()) -> Qwen2Tokenizer:
    """Qwen2's real tokenizer class over a byte-level vocabulary, with Qwen2-Audio's special tokens;
    each of `words` (byte-level pieces, see `byte_level_pieces`) becomes a single token."""
    vocab = byte_vocab(QWEN2_AUDIO_SPECIAL_TOKENS)
    merges = word_merges(words, vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN2_AUDIO_SPECIAL_TOKENS[1:]),
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    return tokenizer


def tiny_qwen2_audio_processor(words: Sequence[str] = ()) -> Qwen2AudioProcessor:
    """The real processor: Whisper features as Qwen2-Audio uses them (128 mel bins, 16 kHz, 30 s window);
    `words` as in `tiny_qwen2_tokenizer`."""
    return Qwen2AudioProcessor(
        feature_extractor=whisper_features(),
        tokenizer=tiny_qwen2_tokenizer(words),
        chat_template=QWEN2_AUDIO_CHAT_TEMPLATE,
    )


def tiny_qwen2_audio_config(tokenizer: Qwen2Tokenizer, seed: int) -> Qwen2AudioConfig:
    """Real config classes at tiny sizes; GQA (4 query, 2 KV heads) and the real 1500-position audio window."""
    text = Qwen2Config(**tiny_text_sizes(tokenizer))
    audio = Qwen2AudioEncoderConfig(initializer_range=TINY_INIT_RANGE, **TINY_AUDIO)
    config = Qwen2AudioConfig(
        audio_config=audio, text_config=text, audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    )
    config.calm_tiny_seed = seed
    return config


def _perturb_vectors(model: torch.nn.Module) -> None:
    """Biases start at 0 and norm scales at 1; move them so the tiny model exercises every term."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * TINY_INIT_RANGE)


def _weights_digest(model: torch.nn.Module) -> str:
    return chunks_sha256(
        part
        for name, tensor in sorted(model.state_dict().items())
        for part in (name.encode(), tensor.detach().contiguous().numpy().tobytes())
    )[:16]


def save_tiny(model_class: Any, config: Any, processor: Any, dest: Path, seed: int) -> Path:
    """Instantiate `model_class(config)` with seeded random weights and save it with its processor.

    The weights' digest is written into config.json so the cache key tells seeds (and inits) apart.
    """
    dest = Path(dest)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    _perturb_vectors(model)
    model.config.calm_tiny_weights = _weights_digest(model)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def build_tiny_qwen2_audio(dest: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-Audio (model + processor) to `dest`; same seed, same files."""
    processor = tiny_qwen2_audio_processor()
    config = tiny_qwen2_audio_config(processor.tokenizer, seed)
    return save_tiny(Qwen2AudioForConditionalGeneration, config, processor, dest, seed)


def ensure_built(dest: Path, seed: int, build: Callable[[Path, int], Path]) -> Path:
    """Build a tiny model at `dest` unless it is there; safe when several processes race to build it."""
    dest = Path(dest)
    if (dest / "config.json").is_file():
        built = json.loads((dest / "config.json").read_text()).get("calm_tiny_seed")
        if built != seed:
            raise ConfigError(
                f"{dest} holds a tiny model built with seed {built}, not {seed}",
                "give each tiny_seed its own backbone.path (or delete the folder)",
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        build(staging, seed)
        try:
            os.rename(staging, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def ensure_tiny_qwen2_audio(dest: Path, seed: int = 0) -> Path:
    """The tiny Qwen2-Audio at `dest`, built on first use."""
    return ensure_built(dest, seed, build_tiny_qwen2_audio)


def chatml_template(audio_markup: str, system: str | None = "You are a helpful assistant.") -> str:
    """A ChatML chat template (the Qwen-style turn format several families share) that renders each user
    turn as its audio items (`audio_markup` each) followed by its text items, generation prompt added."""
    first = (
        "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + system + "<|im_end|>\n{% endif %}"
        if system
        else ""
    )
    return (
        "{% for message in messages %}" + first + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
        + audio_markup
        + "{% endif %}{% endfor %}"
        "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def special_tokens_tokenizer(
    specials: Sequence[str], eos: str, pad: str, chat_template: str, named: dict[str, str] | None = None
) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer (Qwen2's real tokenizer class, every byte one token) with a family's
    special tokens; `named` gives the attributes its processor reads (e.g. {"audio_token": "<|audio_pad|>"})."""
    vocab = byte_vocab(specials)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, eos_token=eos, pad_token=pad, extra_special_tokens=dict(named or {})
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in (eos, pad)]})
    tokenizer.padding_side = "left"
    tokenizer.chat_template = chat_template
    return tokenizer


def whisper_features(chunk_length: int = 30) -> WhisperFeatureExtractor:
    """Whisper log-mel features as these families use them: 128 mel bins, 16 kHz, 10 ms hop."""
    return WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=chunk_length,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=True,
    )


def tiny_text_sizes(tokenizer: Qwen2Tokenizer, sizes: dict[str, int] = TINY_TEXT, **extra: Any) -> dict[str, Any]:
    """The tiny language-model `sizes` (default TINY_TEXT: 2 layers x 4 heads x 16, GQA) with the tokenizer's ids."""
    vocab = len(tokenizer)
    return {
        **sizes,
        "vocab_size": vocab + (-vocab % 16),
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "initializer_range": TINY_INIT_RANGE,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **extra,
    }


TINY_WHISPER_ENCODER = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "initializer_range": TINY_INIT_RANGE,
}
