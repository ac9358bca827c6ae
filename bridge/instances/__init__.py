"""Instances: Twilio accounts provisioned at runtime through the admin API."""
