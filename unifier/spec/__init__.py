"""The job spec: pydantic models nested by concern, and loading from YAML."""

from .adapter import AdapterSpec
from .compute import ComputeSpec
from .data import DataSource, DataSpec
from .job import JobSpec
from .loading import apply_overrides, load_spec, spec_from_dict
from .model import ModelSpec
from .output import OutputSpec
from .quantization import QuantizationSpec
from .training import DPOSpec, ORPOSpec, SimPOSpec, TrainingSpec, TrainingSpecBase

__all__ = [
    "AdapterSpec",
    "ComputeSpec",
    "DPOSpec",
    "DataSource",
    "DataSpec",
    "JobSpec",
    "ModelSpec",
    "ORPOSpec",
    "OutputSpec",
    "QuantizationSpec",
    "SimPOSpec",
    "TrainingSpec",
    "TrainingSpecBase",
    "apply_overrides",
    "load_spec",
    "spec_from_dict",
]
