# StockStock: one image for the daemon (`python -m stockstock`, the default command) and for
# JupyterLab (see compose.yaml). Secrets never enter the image: they come from .env at run time
# (compose `env_file`), and .dockerignore keeps .env, data/, models/ and outputs/ out of the build.
# BASE_IMAGE: python:3.11-slim; tests/deploy builds on a stand-in with the same Debian release and
# Python minor version where no image registry is reachable (the steps below run unchanged on it)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# libgomp1: LightGBM's OpenMP runtime (not in the slim image); git: every run records the commit
# it ran; tini: PID 1, forwards SIGTERM to the daemon and reaps the kernels of finished runs
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 git tini \
 && rm -rf /var/lib/apt/lists/*

# a non-root user; UID matches the owner of the mounted data/, models/, outputs/ on the host
ARG UID=1000
RUN useradd --create-home --uid "${UID}" stockstock \
 && mkdir /app && chown stockstock:stockstock /app
WORKDIR /app
COPY --chown=stockstock:stockstock . /app
USER stockstock

# the README's install (quick start), in the project's own virtualenv; [dev] brings JupyterLab
RUN python3.11 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --quiet --upgrade pip \
 && .venv/bin/pip install --no-cache-dir --quiet -e ".[dev]" \
 && mkdir -p data models outputs
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 STOCKSTOCK_HOME=/app

# the database and logs, the trained model, the executed run notebooks: state, not image
VOLUME ["/app/data", "/app/models", "/app/outputs"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "stockstock"]
