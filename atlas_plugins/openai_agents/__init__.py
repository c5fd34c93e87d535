"""Adapter package for openai_agents. Its wrap is not implemented yet: this package exports nothing until it is."""
