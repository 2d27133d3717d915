"""A report section made of an experiment's figures (those of its ``plot`` hook), each with a caption."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from infoflow.experiments.experiment import Block, FigureBlock, Heading

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure_section(heading: str, caption: str, figures: Iterable[tuple[str, Figure]]) -> list[Block]:
    """``heading``, then every ``(name, figure)`` captioned ``caption (name)``."""
    return [Heading(heading), *(FigureBlock(figure, f"{caption} ({name})") for name, figure in figures)]
