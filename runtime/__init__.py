"""What runs actors: activation, mailboxes, steps, effects and recovery over one journal."""

from ._rebuild import Loaded, load
from ._registry import Registry
from ._runtime import Runtime

__all__ = ("Loaded", "Registry", "Runtime", "load")
