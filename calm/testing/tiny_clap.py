"""A tiny random CLAP from the real classes, for tests and offline dry runs.

Real config classes (ClapAudioConfig, ClapTextConfig, ClapConfig) at tiny sizes, the real ClapModel,
the real ClapFeatureExtractor with laion/clap-htsat-unfused's audio settings (48 kHz, 10 s window,
64 mel bins, hop 480, repeat-padding, `rand_trunc`), and RoBERTa's real tokenizer class (CLAP's text
tower is RoBERTa) over a byte-level vocabulary with RoBERTa's special tokens. Its numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    ClapTextConfig,
    RobertaTokenizer,
)

from calm.testing.tiny import TINY_INIT_RANGE, _byte_alphabet, ensure_built, save_tiny

ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in roberta-base
PROJECTION_DIM = 16
# The audio tower's output width is patch_embeds_hidden_size * 2**(stages - 1), which the projection reads.
TINY_AUDIO = {"patch_embeds_hidden_size": 8, "hidden_size": 16, "depths": [1, 1], "num_attention_heads": [1, 2]}
TINY_TEXT = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 130,
}


def tiny_roberta_tokenizer() -> RobertaTokenizer:
    """RoBERTa's tokenizer class over a byte-level vocabulary (every byte one token) with its special tokens."""
    vocab = {token: i for i, token in enumerate(ROBERTA_SPECIAL_TOKENS)}
    for char in _byte_alphabet():
        vocab[char] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=TINY_TEXT["max_position_embeddings"] - 2)


def tiny_clap_processor() -> ClapProcessor:
    """The real processor with the unfused checkpoint's audio settings."""
    features = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    return ClapProcessor(feature_extractor=features, tokenizer=tiny_roberta_tokenizer())


def tiny_clap_config(tokenizer: RobertaTokenizer, seed: int) -> ClapConfig:
    """Real config classes at tiny sizes; the real 256-wide spectrogram image (64 mel bins), unfused."""
    audio = ClapAudioConfig(projection_dim=PROJECTION_DIM, enable_fusion=False, **TINY_AUDIO)
    text = ClapTextConfig(
        vocab_size=len(tokenizer), projection_dim=PROJECTION_DIM, pad_token_id=tokenizer.pad_token_id, **TINY_TEXT
    )
    config = ClapConfig(
        text_config=text.to_dict(),
        audio_config=audio.to_dict(),
        projection_dim=PROJECTION_DIM,
        initializer_factor=TINY_INIT_RANGE / 0.02,
    )
    config.calm_tiny_seed = seed
    return config


def build_tiny_clap(dest: Path, seed: int = 0) -> Path:
    """Write a tiny random CLAP (model + processor) to `dest`; same seed, same files."""
    processor = tiny_clap_processor()
    return save_tiny(ClapModel, tiny_clap_config(processor.tokenizer, seed), processor, dest, seed)


def ensure_tiny_clap(dest: Path, seed: int = 0) -> Path:
    """The tiny CLAP at `dest`, built on first use."""
    return ensure_built(dest, seed, build_tiny_clap)
