"""Adapter package for byoa. Its wrap is not implemented yet: this package exports nothing until it is."""
