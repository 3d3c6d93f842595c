"""Training loss and validation Dice per epoch, live, on matplotlib's Qt canvas.

Drawing a whole figure takes tens of milliseconds of Python on the GUI thread, and longer while
the training thread competes for the interpreter. So the axes are drawn only when their limits
change; each new point is blitted onto a cached background (a few milliseconds). A hidden plot
(another dock tab in front) draws nothing until it is shown. A new run redraws the axes only if
its label or epoch range differs from the last one, and then before its worker starts, so the draw
does not compete with the worker for the interpreter.
"""

from __future__ import annotations

import math


class EpochPlot:
    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        # fixed margins: a layout engine (constrained/tight) would re-solve on every draw
        self.figure = Figure(figsize=(4, 2.6))
        self.figure.subplots_adjust(left=0.17, right=0.83, bottom=0.19, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.ax_loss = self.figure.add_subplot(111)
        self.ax_dice = self.ax_loss.twinx()
        self.ax_loss.set_xlabel("epoch")
        self.ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax_loss.set_ylabel("training loss", color="tab:blue")
        (self.loss_line,) = self.ax_loss.plot(
            [], [], "o-", color="tab:blue", label="training loss", animated=True
        )
        (self.dice_line,) = self.ax_dice.plot(
            [], [], "s-", color="tab:orange", label="validation Dice", animated=True
        )
        self.before_line = self.ax_dice.axhline(
            0.0,
            ls="--",
            color="tab:orange",
            alpha=0.5,
            label="before",
            animated=True,
            visible=False,
        )
        self._background = None
        self._stale = False
        self._layout = None  # (label, x range) the axes were last drawn with
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.reset("validation Dice")

    def reset(self, dice_label: str, epochs: int | None = None) -> None:
        """Empty curves; the x axis sized for ``epochs`` (grows if a run goes further)."""
        from matplotlib.lines import Line2D

        self.loss_line.set_data([], [])
        self.dice_line.set_data([], [])
        self.before_line.set_visible(False)
        layout = (dice_label, max(3, epochs or 3))
        unchanged = (
            layout == self._layout
            and self.ax_loss.get_xlim() == (0.5, layout[1] + 0.5)
            and self.ax_loss.get_ylim() == (0, 1.5)
        )
        if unchanged and self._background is not None:
            self._update(full=False)  # same axes: blit the empty curves
            return
        self._layout = layout
        self.dice_line.set_label(dice_label)
        self.ax_dice.set_ylabel(
            dice_label if len(dice_label) < 28 else "validation Dice", color="tab:orange"
        )
        self.ax_loss.set_xlim(0.5, layout[1] + 0.5)
        self.ax_loss.set_ylim(0, 1.5)
        self.ax_dice.set_ylim(0, 1)
        before = Line2D([], [], ls="--", color="tab:orange", alpha=0.5, label="before fine-tuning")
        self.ax_loss.legend(
            handles=[self.loss_line, self.dice_line, before], loc="lower left", fontsize="small"
        )
        if self.canvas.isVisible():
            self.canvas.draw()  # now, before the run's worker starts (see the module docstring)
        else:
            self._stale = True

    def add_epoch(self, epoch: int, loss: float | None, dice: float | None) -> None:
        """Epoch 0 (the model before training) draws the dashed 'before' line; later epochs add
        one point to each curve."""
        full = False
        if epoch == 0:
            if dice is None:
                return
            self.before_line.set_ydata([dice, dice])
            self.before_line.set_visible(True)
        else:
            if loss is not None:
                self._append(self.loss_line, epoch, loss)
                lo, hi = self.ax_loss.get_ylim()
                if loss > hi:
                    self.ax_loss.set_ylim(0, loss * 1.25)
                    full = True
            if dice is not None:
                self._append(self.dice_line, epoch, dice)
            lo, hi = self.ax_loss.get_xlim()
            if epoch + 0.5 > hi:
                self.ax_loss.set_xlim(0.5, 2 * epoch + 0.5)
                full = True
        self._update(full)

    @staticmethod
    def _append(line, x, y) -> None:
        line.set_data(list(line.get_xdata()) + [x], list(line.get_ydata()) + [y])

    def points(self) -> dict[str, int]:
        """How many points each curve holds (one per finished epoch)."""
        return {"loss": len(self.loss_line.get_xdata()), "dice": len(self.dice_line.get_xdata())}

    def epochs(self, curve: str = "loss") -> list[int]:
        """The epochs a curve (``loss`` or ``dice``) has points for."""
        line = self.loss_line if curve == "loss" else self.dice_line
        return [int(x) for x in line.get_xdata()]

    @property
    def dice_label(self) -> str:
        """What the Dice curve measures, as its legend says."""
        return self.dice_line.get_label()

    # ------------------------------------------------------------------ drawing

    def _update(self, full: bool) -> None:
        if not self.canvas.isVisible():
            self._stale = True
            return
        if full or self._background is None:
            self.canvas.draw_idle()  # the draw_event handler caches the background
            return
        self.canvas.restore_region(self._background)
        self._draw_curves()
        self.canvas.blit(self.figure.bbox)

    def shown(self) -> None:
        """Call when the widget becomes visible: draw what changed while it was hidden."""
        if self._stale:
            self._stale = False
            self.canvas.draw_idle()

    def _on_draw(self, _event) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_curves()

    def _draw_curves(self) -> None:
        if self.before_line.get_visible() and not math.isnan(self.before_line.get_ydata()[0]):
            self.ax_dice.draw_artist(self.before_line)
        self.ax_loss.draw_artist(self.loss_line)
        self.ax_dice.draw_artist(self.dice_line)
