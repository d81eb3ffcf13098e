"""Training methods: each is one file, built on :class:`Method`; the engine runs them."""

from .base import Batch, EvalBatch, Method, MethodContext, StepOutput
from .registry import create_method, describe_method, list_methods, register_method

__all__ = ["Batch", "EvalBatch", "Method", "MethodContext", "StepOutput", "create_method", "describe_method", "list_methods",
           "register_method"]
