FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 arbbot
WORKDIR /app
COPY --chown=arbbot:arbbot . .
RUN pip install -c constraints.txt . && rm -rf build ./*.egg-info

USER arbbot
ENTRYPOINT ["arbbot"]
CMD ["demo"]
