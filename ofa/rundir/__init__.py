"""The run directory as types: :class:`RunDir` names its paths, and each JSON file the stages hand each other is
a dataclass with a ``format`` version (``Selection``, ``DeployReport``, ``SlimmableReport``, ``SearchReport``)::

    run = RunDir("runs/demo")
    selection = Selection.read(run.selection)          # what the search chose, per device
    report = DeployReport.read(run.device_report("phone"))
"""

from .paths import RunDir
from .record import FORMAT, FileRecord, Record, check_format
from .reports import DeployReport, SearchReport, SlimmableReport
from .selection import SelectedDevice, Selection

__all__ = ["FORMAT", "DeployReport", "FileRecord", "Record", "RunDir", "SearchReport", "SelectedDevice", "Selection",
           "SlimmableReport", "check_format"]
