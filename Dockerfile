# The gateway image: `docker build -t llm-gateway .` then see deploy/compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system gateway
COPY config ./config
USER gateway
# Listening on every interface: with no auth.keys in the config, `gateway serve` refuses to start
# open unless GATEWAY_ALLOW_OPEN=true (config/gateway.yaml reads it into server.allow_open).
ENV GATEWAY_CONFIG=/app/config/gateway.yaml GATEWAY_HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/readyz')" || exit 1
CMD ["gateway", "serve"]
