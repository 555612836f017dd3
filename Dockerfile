FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Node.js and npm: the demo's local chain (anvil, Uniswap V2) comes from npm packages.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 arbbot
WORKDIR /app
COPY --chown=arbbot:arbbot . .
# Editable, so the demo finds config/ and chain/ next to the code.
RUN pip install -c constraints.txt -e . && npm ci --prefix chain --no-audit --no-fund --ignore-scripts

USER arbbot
ENTRYPOINT ["arbbot"]
CMD ["demo"]
