"""At most one Twilio call per request id (``BRIDGE_DEDUPE__*``): the index and its Kafka log."""
