# syntax=docker/dockerfile:1
# Build stage: compilers and pip caches stay here.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python -m venv /opt/bridge \
    && /opt/bridge/bin/pip install --no-cache-dir .

# Runtime stage: the virtualenv only, as a non-root user, read-only root filesystem friendly.
FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="twilio-kafka-bridge" \
      org.opencontainers.image.description="Twilio behind Kafka: request envelopes to Twilio calls, webhooks to CloudEvents" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/bridge /opt/bridge
RUN useradd --system --uid 10001 --no-create-home bridge
USER 10001
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["twilio-bridge"]
CMD ["run"]
