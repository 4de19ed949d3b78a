# syntax=docker/dockerfile:1
# The AgentManager image: `am serve` by default; the same image runs `am worker`
# and the one-shot `python -m agent_manager.deploy.prepare` (see docker-compose.yml).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent_manager ./agent_manager
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install /wheels/*.whl
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home am \
    && mkdir -p /data/workspace \
    && chown -R am:am /data
USER am
WORKDIR /data
# Listen on every interface inside the container; log one JSON object per line.
ENV AM_HOST=0.0.0.0 \
    AM_PORT=8001 \
    AM_WORKSPACE=/data/workspace \
    AM_LOG_FORMAT=json
EXPOSE 8001
# Standard library only (no curl in the image): GET http://127.0.0.1:$AM_PORT/healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "agent_manager.deploy.healthcheck"]
CMD ["am", "serve"]
