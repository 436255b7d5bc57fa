"""Model families. Adding one is a module with a ``@register("name")`` class and one import in
``registry._load_builtin``."""

from .base import Batch, Family
from .registry import family_names, get_family, register

__all__ = ["Batch", "Family", "family_names", "get_family", "register"]
