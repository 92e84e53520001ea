# syntax=docker/dockerfile:1
# One image for every role: `tally serve --role ingest|query`, `tally migrate`, `tally token`.
# Dependencies come from requirements.lock only, every file hash-checked. Nothing secret is
# baked in (.env is in .dockerignore): settings arrive as TALLY_* variables at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The lock first, alone: this layer is rebuilt only when the lock changes, not on every edit.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingest ./ingest
COPY query ./query
COPY plans ./plans
COPY tally ./tally
COPY migrations ./migrations
# --no-deps: everything is already installed from the lock. --no-build-isolation: build with the
# setuptools from the lock rather than an unpinned one fetched for the build. Editable, as
# `make install` does, because migrations/ sits beside the packages (tally.migrate finds it
# next to its own file) and a regular install would leave it behind.
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --system --uid 10001 --no-create-home tally

USER tally
EXPOSE 8000
ENTRYPOINT ["tally"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
