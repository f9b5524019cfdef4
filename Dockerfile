# Sentinel: a lean gateway for OpenAI-compatible APIs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
# A numeric, non-root user (deploy/k8s runs it as 10001:10001 with a read-only root
# filesystem) that owns the one place Sentinel writes: the usage spool's directory.
RUN pip install . \
    && groupadd --system --gid 10001 sentinel \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sentinel \
        --no-create-home --shell /usr/sbin/nologin sentinel \
    && mkdir -p /var/lib/sentinel/spool \
    && chown -R 10001:10001 /var/lib/sentinel \
    && chmod 0700 /var/lib/sentinel /var/lib/sentinel/spool

# Without [usage] spool_dir the spool is $XDG_STATE_HOME/sentinel/spool: this directory.
ENV XDG_STATE_HOME=/var/lib
USER 10001:10001
EXPOSE 8080
# Mount a config at /etc/sentinel/sentinel.toml (see deploy/sentinel.example.toml).
ENV SENTINEL_CONFIG=/etc/sentinel/sentinel.toml
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz')" || exit 1
ENTRYPOINT ["sentinel"]
CMD ["serve", "--bind", "0.0.0.0:8080"]
