"""The I/O shell that talks to Kafka (aiokafka); nothing outside it sees aiokafka types."""

__all__: list[str] = []
