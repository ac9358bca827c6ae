"""``twilio-bridge replay``: publish the requests of the error topic again.

``selection`` decides, record by record and without I/O, what is sent again and why the rest
is not; ``runner`` reads the error topic from the replay's own consumer group, publishes,
paces, shows progress and commits as it goes.
"""

__all__: list[str] = []
