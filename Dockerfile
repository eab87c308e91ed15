# One image for every Nimbus service; the command picks the service (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY nimbus ./nimbus
COPY registry ./registry
COPY replicator ./replicator
COPY notifier ./notifier
COPY proto ./proto
COPY console ./console
# Exactly the runtime set of uv.lock (no test or lint extras), into its own environment.
ENV UV_PROJECT_ENVIRONMENT=/opt/nimbus PATH=/opt/nimbus/bin:$PATH
RUN pip install --no-cache-dir uv==0.13.8 \
    && uv sync --locked --no-editable --no-cache --compile-bytecode \
    && pip uninstall --yes uv && useradd --system --uid 10001 nimbus \
    && mkdir -p /data && chown nimbus /data
USER nimbus
VOLUME ["/data"]
EXPOSE 5000 5080 9102 9103 50051 50052 50053
ENTRYPOINT ["nimbus"]
CMD ["registry", "--listen", "0.0.0.0:5000", "--data-dir", "/data"]
