"""The official-layout writers for the loader and CLI tests; their one home is calm.tables.smoke_layouts
(the paper table's smoke run writes the same layouts)."""

from calm.tables.smoke_layouts import (
    ESC10,
    ESC50_CATEGORIES,
    ESC50_HEADER,
    audio_bytes,
    audioset_segments,
    esc50_rows,
    make_asvspoof,
    make_audioset,
    make_esc50,
    make_vggsound,
    tone,
    write_mp4,
)

__all__ = ["ESC10", "ESC50_CATEGORIES", "ESC50_HEADER", "audio_bytes", "audioset_segments", "esc50_rows",
           "make_asvspoof", "make_audioset", "make_esc50", "make_vggsound", "tone", "write_mp4"]
