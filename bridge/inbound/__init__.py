"""Inbound: Twilio webhooks and the poller, published to Kafka as CloudEvents."""
