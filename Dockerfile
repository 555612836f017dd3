# syntax=docker/dockerfile:1
# One image for every role (`arbbot run -c /app/config/docker.yaml --roles signals|risk|paper`), the demo and the
# CLI. docker-compose.yml builds it as arbbot:local.

# The local chain's npm packages (anvil's native binary, the Uniswap V2 build artefacts), for `arbbot demo` only.
# Nothing at run time executes node, so Node.js and npm stay in this stage.
FROM python:3.11-slim AS chain-deps
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build/chain
COPY chain/package.json chain/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ARBBOT_HTTP_HOST=0.0.0.0 \
    ARBBOT_HTTP_PORT=8787

# A fixed non-root uid, and /data (the working folder, and where a volume goes) as the only place it writes.
RUN useradd --create-home --uid 10001 --user-group arbbot \
    && mkdir /data \
    && chown arbbot:arbbot /data

WORKDIR /app
# Code and packages stay owned by root: the service user can read them, not change them.
COPY . .
COPY --from=chain-deps /build/chain/node_modules chain/node_modules
# Editable, so arbbot finds config/, models/ and chain/ next to its code; exact versions from constraints.txt.
RUN pip install -c constraints.txt -e .

USER 10001:10001
WORKDIR /data
EXPOSE 8787
# Liveness of the arbbot process: /healthz on loopback (/readyz says whether it is ready for traffic).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py", "/healthz"]
ENTRYPOINT ["arbbot"]
CMD ["run", "-c", "/app/config/docker.yaml"]
