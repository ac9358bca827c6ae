"""Voice and message webhooks answered with TwiML from a Kafka service (``BRIDGE_TWIML__*``):
what each event id settled to, the failure records, and the waiting itself."""
