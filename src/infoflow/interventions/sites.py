"""The sites of a layer step that patches act on, as options are checked (torch-free, for the command line and
the experiments' parameters)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from infoflow.models.modes import Site

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM

__all__ = ["Site", "check_sites", "parse_site"]


def parse_site(site: Site | str) -> Site:
    """``site`` as a :class:`Site`; a ``ValueError`` naming the sites for anything else."""
    try:
        return Site(site)
    except ValueError:
        raise ValueError(f"unknown site {site!r}; choose {', '.join(s.value for s in Site)}") from None


def check_sites(model: CausalLM, sites: Iterable[Site]) -> None:
    """A ``ValueError`` for the MLP site on a model none of whose layers has an MLP (Mamba)."""
    if Site.MLP in set(sites) and not any(model.block(layer).mlp is not None for layer in range(model.n_layers)):
        raise ValueError(f"this {model.family} model's layers have no MLP; leave out the site mlp")
