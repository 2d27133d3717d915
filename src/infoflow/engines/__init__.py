"""Engines run interventions on a model: the reference engine (one plain forward per intervention, the
oracle) and the fast engine (reuses the clean run)."""
