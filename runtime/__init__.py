"""What runs actors: activation, mailboxes, steps, effects and recovery over one journal."""

from ._cluster import NodeOptions, NodeStatus
from ._compact import CompactReport
from ._compare import Difference, first_difference
from ._drill import Behind, DrillProblem, DrillReport, DrillStatus, DrillTimings, drill
from ._followers import StreamItem, stream_item
from ._fork import ForkReport
from ._options import Durability, Limits, ReplicationOptions
from ._rebuild import Loaded, load
from ._registry import Registry
from ._replay import Divergence, ReplayReport, replay
from ._runtime import Runtime
from ._statistics import RuntimeStatistics, WriterStatistics
from ._timers import VirtualClock

__all__ = (
    "Behind",
    "CompactReport",
    "Difference",
    "Divergence",
    "DrillProblem",
    "DrillReport",
    "DrillStatus",
    "DrillTimings",
    "Durability",
    "ForkReport",
    "Limits",
    "Loaded",
    "NodeOptions",
    "NodeStatus",
    "Registry",
    "ReplayReport",
    "ReplicationOptions",
    "Runtime",
    "RuntimeStatistics",
    "StreamItem",
    "VirtualClock",
    "WriterStatistics",
    "drill",
    "first_difference",
    "load",
    "replay",
    "stream_item",
)
