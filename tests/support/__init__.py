"""What the kinds of tests (unit, integration, perf) run against but do not test: the bridge
process and its topics, a fast Twilio stand-in, throwaway certificates and a TLS/SASL front for
the broker.

Nothing here is collected as a test; the test packages import from here (and from
``tests.helpers``), never from each other.
"""
