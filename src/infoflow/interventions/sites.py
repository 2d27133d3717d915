"""The sites of a layer step that patches act on, as options are checked (torch-free, for the command line and
the experiments' parameters)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from infoflow.models.modes import Site

if TYPE_CHECKING:
    from infoflow.models.base import CausalLM

__all__ = ["Site", "check_sites", "model_sites", "parse_site"]


def parse_site(site: Site | str) -> Site:
    """``site`` as a :class:`Site`; a ``ValueError`` naming the sites for anything else."""
    try:
        return Site(site)
    except ValueError:
        raise ValueError(f"unknown site {site!r}; choose {', '.join(s.value for s in Site)}") from None


def has_mlp(model: CausalLM) -> bool:
    """Whether any of the model's layers has an MLP (Mamba's have none)."""
    return any(model.block(layer).mlp is not None for layer in range(model.n_layers))


def model_sites(model: CausalLM, allowed: Iterable[Site] = tuple(Site)) -> tuple[Site, ...]:
    """The ``allowed`` sites the model has: all but the MLP on a model without one."""
    return tuple(site for site in allowed if site is not Site.MLP or has_mlp(model))


def check_sites(model: CausalLM, sites: Iterable[Site]) -> None:
    """A ``ValueError`` for the MLP site on a model none of whose layers has an MLP (Mamba)."""
    if Site.MLP in set(sites) and not has_mlp(model):
        raise ValueError(f"this {model.family} model's layers have no MLP; leave out the site mlp")
