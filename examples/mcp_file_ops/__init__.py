"""The 25-task MCP file-operations example: ``python -m examples.mcp_file_ops`` (see ``__main__``).

``server`` (the confined MCP file tools), ``workspace`` (the pristine workspace), ``tasks`` (the 25 tasks and
their checkers), ``scripted`` (scripted models for an LLM-free run) and ``harness`` (``run_suite``).
"""
