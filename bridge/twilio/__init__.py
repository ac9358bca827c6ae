"""The I/O shell that talks HTTP to Twilio."""

__all__: list[str] = []
