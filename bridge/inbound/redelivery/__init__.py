"""Recognising an event Twilio delivers again (``BRIDGE_WEBHOOK__DEDUPE_*``): the window of ids
seen and its Kafka log."""
