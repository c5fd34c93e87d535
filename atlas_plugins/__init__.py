"""Thin adapters that put an existing agent under Atlas supervision.

Each sub-package translates one framework's events into :mod:`atlas_learning`'s vocabulary and applies its
decisions; none of them decides anything itself. Import the one you need:
``atlas_plugins.langgraph``, ``atlas_plugins.openai_agents`` or ``atlas_plugins.byoa``.
"""
