# One image, every role: the command picks it.
#   docker run IMAGE cdn-auth serve            # edge + media API
#   docker run IMAGE dm-service serve          # DM service
#   docker run IMAGE cdn-auth keys init --dir /keys/pointer
#   docker run IMAGE locust -f /app/locustfile.py --master
# Configuration is by environment (CDN_AUTH_*, DM_*): see docs/operations.md.

# ---- build: wheels for the project and its dependencies ----------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# g++: pdqhash (Meta's PDQ hasher, known-bad media matching) builds from source.
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, keyed on pyproject.toml (and the version it reads), so a code change
# rebuilds one wheel (this first project wheel is a stub; the one built below replaces it).
COPY pyproject.toml README.md LICENSE ./
COPY cdn_auth/__init__.py ./cdn_auth/__init__.py
RUN pip wheel --wheel-dir /wheels ".[server,load]"
COPY service_kernel ./service_kernel
COPY cdn_auth ./cdn_auth
COPY dm ./dm
COPY loadtests ./loadtests
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime: no compiler, no root --------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN groupadd --system app && useradd --system --gid app --home-dir /app --create-home app
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "pointer-dm[server,load]" && rm -rf /wheels
WORKDIR /app
COPY --chown=app:app loadtests/load/locustfile.py deploy/ ./
# Every path a named volume mounts must exist here, owned by app: an empty named volume
# takes the directory's owner and mode on first mount, and a missing one mounts root-owned
# (uploads then fail with EACCES).
RUN mkdir -p /data/origin/uploads /data/origin/ingest /keys \
    && chown -R app:app /data /keys
USER app
# Listening on 0.0.0.0 inside the container; publish ports explicitly.
ENV CDN_AUTH_HOST=0.0.0.0 DM_HOST=0.0.0.0 HEALTHCHECK_URL=""
EXPOSE 8080 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os,sys,urllib.request as u; url=os.environ.get('HEALTHCHECK_URL'); sys.exit(0 if not url or u.urlopen(url, timeout=2).status == 200 else 1)"
CMD ["cdn-auth", "serve"]
