"""calm: few-shot audio classification with the attention heads of audio-language models."""

__version__ = "0.1.0"
