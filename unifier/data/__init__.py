"""Data: read sources, detect formats, normalize once into canonical JSONL."""

from .formats import detect_format, to_canonical
from .prepare import PreparedData, planned_data_kind, prepare_data

__all__ = ["PreparedData", "detect_format", "planned_data_kind", "prepare_data", "to_canonical"]
