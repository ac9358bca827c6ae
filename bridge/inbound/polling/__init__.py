"""The poller, for accounts without webhooks: what was seen (pure) and the loop that fetches."""
