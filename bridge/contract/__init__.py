"""The public contract: request and reply envelopes, error kinds, CloudEvents.

Imports nothing else of the bridge: everything else may import it.
"""
