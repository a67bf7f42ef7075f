"""What runs actors: activation, mailboxes, steps, effects and recovery over one journal."""

from ._rebuild import Loaded, load
from ._registry import Registry
from ._replay import Divergence, ReplayReport, replay
from ._runtime import Runtime
from ._timers import VirtualClock

__all__ = ("Divergence", "Loaded", "Registry", "ReplayReport", "Runtime", "VirtualClock", "load", "replay")
