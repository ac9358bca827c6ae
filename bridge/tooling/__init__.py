"""Tooling apart from the runtime: the demo, local components, generators.

Never imported by the service (an import-linter layer above ``bridge.app``).
"""
