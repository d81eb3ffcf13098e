"""Training methods: each is one file, built on the contract in :mod:`noisykd.methods.base`; the engine runs them."""

from .base import (
    Batch,
    Detection,
    EvalBatch,
    GroundTruth,
    LabelCheck,
    Method,
    MethodContext,
    Network,
    NoArgs,
    ParamGroup,
    Prediction,
    Progress,
    Role,
    SampleOutputs,
    StepOutput,
    View,
    Views,
)
from .registry import METHODS, create_method, describe_method, list_methods, parse_method_args, register_method

__all__ = ["Batch", "Detection", "EvalBatch", "GroundTruth", "LabelCheck", "Method", "MethodContext", "Network", "NoArgs", "ParamGroup",
           "Prediction", "Progress", "Role", "SampleOutputs", "StepOutput", "View", "Views", "METHODS",
           "create_method", "describe_method", "list_methods", "parse_method_args", "register_method"]
