"""Delivery tracking: each tracked send's statuses, correlated and published once, in order."""
