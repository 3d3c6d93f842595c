"""Import, while a widget is being built, what a run would otherwise import in its worker thread.

Importing a large package allocates hundreds of thousands of objects, which sets off Python's full
garbage collections; in a napari process each holds the GIL for 100–300 ms, so when that happens
in a worker the viewer freezes for as long (``benchmarks/bench_gui_stall.py --stacks`` showed it:
the first optimizer in a process imports ``torch._dynamo``). Widgets call these while they are
built, when napari is blocked anyway. No Qt.
"""

from __future__ import annotations


def for_segmentation() -> None:
    """torch and everything a segmentation run loads on its first call."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401

    from . import inference, metrics, models, uncertainty, unet  # noqa: F401


def for_training() -> None:
    """The above plus training: one optimizer step on a scalar imports what the first real step
    would (``torch._dynamo`` with the optimizer, the profiler hooks with its step)."""
    import torch

    for_segmentation()
    from . import finetune, training  # noqa: F401

    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.AdamW([weight])
    (weight * 2).sum().backward()
    optimizer.step()
