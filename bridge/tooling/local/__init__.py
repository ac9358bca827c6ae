"""Real components run on this machine for ``twilio-bridge demo`` and the integration tests.

Tansu (a Kafka-protocol broker) and Prism (a Twilio mock serving Twilio's official OpenAPI
spec). Not used by the production service.
"""

__all__: list[str] = []
