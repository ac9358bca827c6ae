"""Twilio webhooks: signature checks and CloudEvents."""
