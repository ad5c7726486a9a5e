"""Data: read sources, detect formats, normalize once into canonical JSONL."""
from .formats import detect_format, to_canonical
from .prepare import PreparedData, prepare_data

__all__ = ["PreparedData", "detect_format", "prepare_data", "to_canonical"]
