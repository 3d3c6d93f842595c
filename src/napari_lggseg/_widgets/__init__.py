"""The plugin's dock widgets: Segment tumour, Fine-tune, Click correction and Annotation project
(the only Qt code).

Importing this package imports neither Qt nor torch: napari resolves each widget class through
``__getattr__`` when a widget is first opened, and torch, the model
store and matplotlib load when it is built.
"""

from __future__ import annotations

__all__ = ["ClicksWidget", "FineTuneWidget", "ProjectWidget", "SegmentWidget"]


def __getattr__(name: str):
    if name == "SegmentWidget":
        from ._segment import SegmentWidget

        return SegmentWidget
    if name == "FineTuneWidget":
        from ._finetune import FineTuneWidget

        return FineTuneWidget
    if name == "ClicksWidget":
        from ._clicks import ClicksWidget

        return ClicksWidget
    if name == "ProjectWidget":
        from ._project import ProjectWidget

        return ProjectWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
