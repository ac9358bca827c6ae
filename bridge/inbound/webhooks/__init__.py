"""Twilio webhooks: signature checks and the receiver that turns one into CloudEvents."""
