"""Outbound: a request envelope from Kafka becomes a Twilio call and exactly one reply."""
