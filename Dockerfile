# One image for every Nimbus service; the command picks the service (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nimbus ./nimbus
COPY registry ./registry
COPY replicator ./replicator
COPY notifier ./notifier
COPY proto ./proto
RUN pip install --no-cache-dir . && useradd --system --uid 10001 nimbus \
    && mkdir -p /data && chown nimbus /data
USER nimbus
VOLUME ["/data"]
EXPOSE 5000 50051 50052 50053
ENTRYPOINT ["nimbus"]
CMD ["registry", "--listen", "0.0.0.0:5000", "--data-dir", "/data"]
