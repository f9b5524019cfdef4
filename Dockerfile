# Sentinel: a lean gateway for OpenAI-compatible APIs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
RUN pip install . && useradd --system --uid 10001 sentinel

USER sentinel
EXPOSE 8080
# Mount a config at /etc/sentinel/sentinel.toml (see deploy/sentinel.example.toml).
ENV SENTINEL_CONFIG=/etc/sentinel/sentinel.toml
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz')" || exit 1
ENTRYPOINT ["sentinel"]
CMD ["serve", "--bind", "0.0.0.0:8080"]
