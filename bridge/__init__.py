"""twilio-kafka-bridge: Twilio behind Kafka."""

__version__ = "0.1.0"
