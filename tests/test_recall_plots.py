"""The numbers behind the recall figures: causal-tracing grids per token and per part of the prompt, and the
attribute and extraction rates of a vocabulary projection, against hand-computed means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infoflow.plots.causal_tracing import causal_tracing_figure, tracing_grid
from infoflow.plots.sublayer_knockout import sublayer_knockout_figure
from infoflow.plots.vocab_projection import projection_rates, vocab_projection_figure


def tracing_rows() -> pd.DataFrame:
    """Two prompts, two layers: prompt 1 is 'A B? C' (subject B), prompt 2 'B? C' (subject B)."""
    rows = []
    for prompt_id, roles in ((1, ["before", "subject_last", "last"]), (2, ["subject_last", "last"])):
        for position, role in enumerate(roles):
            for layer in (0, 1):
                p = prompt_id + 10 * position + 100 * layer
                rows.append({"prompt_id": prompt_id, "site": "mlp", "window_size": 1, "layer": layer,
                             "position": position, "token": f"t{position}", "role": role, "p": float(p),
                             "p_corrupted": 0.0, "p0": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_tracing_grid_per_prompt_and_averaged_by_part() -> None:
    frame = tracing_rows()
    grid, labels = tracing_grid(frame, 1)
    assert labels == ["t0", "t1*", "t2"]
    assert np.array_equal(grid, [[1, 101], [11, 111], [21, 121]])
    grid, labels = tracing_grid(frame, None)
    assert labels == ["tokens before the subject", "last subject token*", "last token"]
    # subject_last: prompt 1 position 1 (11, 111) and prompt 2 position 0 (2, 102)
    assert np.array_equal(grid, [[1, 101], [6.5, 106.5], [(21 + 12) / 2, (121 + 112) / 2]])
    assert len(causal_tracing_figure(frame).axes) == 2  # the panel and its colour bar
    with pytest.raises(ValueError, match="no causal-tracing rows for prompt 7"):
        causal_tracing_figure(frame, 7)


def test_projection_rates_are_means_over_prompts() -> None:
    frame = pd.DataFrame(
        {
            "prompt_id": [1, 2, 1, 2],
            "position_role": ["subject_last", "subject_last", "last", "last"],
            "site": ["mlp"] * 4,
            "layer": [0] * 4,
            "attribute_share": [0.2, 0.4, 0.0, 0.0],
            "target_top1": [False, False, True, False],
        }
    )
    rates = projection_rates(frame).set_index("position_role")
    assert rates.loc["subject_last", "attribute_rate"] == pytest.approx(30.0)
    assert rates.loc["last", "extraction_rate"] == pytest.approx(50.0)
    assert len(vocab_projection_figure(frame).axes) == 2


def test_sublayer_figure_refuses_mixed_window_sizes() -> None:
    frame = pd.DataFrame({"target": ["last"] * 2, "window_size": [2, 3], "site": ["mlp"] * 2, "window_start": [0, 0],
                          "diff": [1.0, 2.0], "prompt_id": [1, 1]})  # fmt: skip
    with pytest.raises(ValueError, match="several window_size values"):
        sublayer_knockout_figure(frame)


def test_sublayer_figure_legend_names_every_site_of_every_panel() -> None:
    """A Mamba panel (mixer only) drawn first still leaves the other panel's MLP line in the legend."""
    rows = [
        {"model": model, "site": site, "target": "last", "window_size": 1, "window_start": start, "n_layers": 2,
         "prompt_id": prompt, "diff": -10.0 * start - prompt}
        for model, sites in (("mamba", ["mixer"]), ("llama", ["mixer", "mlp"]))
        for site in sites for start in (0, 1) for prompt in (1, 2)
    ]  # fmt: skip
    (legend,) = sublayer_knockout_figure(pd.DataFrame(rows)).legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert [label.rsplit(" (n = ", 1)[0] for label in labels] == ["mixer (attention / SSM) update", "MLP update"]
