"""Implementations of the ``atlas`` commands, one module per command family.

``atlas_learning.cli`` declares the commands and their options and imports these modules only when a command
runs, so ``atlas --help`` loads none of the store, model or plotting code.
"""
