# Production image for Symbolon. It talks to real PostgreSQL, Redis and S3 given by URLs
# (see docker-compose.yml and conf/.env.example); the `embedded` extra is left out on purpose,
# so a container with a missing URL fails at start-up instead of hiding state inside itself.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed numeric uid, so orchestrators can verify "runs as non-root" without a passwd lookup.
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home symbolon

# Install from a scratch directory and delete it: the code then lives only in site-packages.
# Only what the build needs is copied, so a developer's .env, .venv or .data never gets in.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY symbolon ./symbolon
RUN pip install . && rm -rf /src

# The working directory is BASEDIR: /__version__ serves /app/version.json if a release adds one.
WORKDIR /app
ENV HOST=0.0.0.0 PORT=8000

USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK here: the same image also runs `symbolon worker`, which serves no HTTP.
# The web container's probe is GET /__lbheartbeat__ (see docker-compose.yml).
CMD ["symbolon", "serve"]
