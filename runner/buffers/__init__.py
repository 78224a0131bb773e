"""Episode batches (scheme-driven, preallocated, masked) and episode replay buffers."""

from runner.buffers.episode import EpisodeBatch, FieldSpec, base_scheme

__all__ = ["EpisodeBatch", "FieldSpec", "base_scheme"]
