# spendwatch container image: `spendwatch serve` (scheduler and endpoint in one), `spendwatch serve --once` (a
# scheduled job), `spendwatch serve --no-schedule` (the Slack endpoint beside such a job), or an AWS Lambda
# function (entry point `python -m awslambdaric`, command `spendwatch.lambda_handlers.scan_handler` or
# `...slack_handler`: the [lambda] extra is installed for that). State: a path, or a PostgreSQL URL in
# SPENDWATCH_DATABASE_URL (psycopg's binary wheel carries its own libpq: no system package needed).
# Multi-stage: the builder makes a wheel; the runtime installs only that wheel, so no compiler, no source tree
# and no pip cache end up in the image.

FROM python:3.11-slim AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY spendwatch ./spendwatch
COPY connectors ./connectors
COPY models ./models
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
# SPENDWATCH_HOST/PORT override [serve] host and port: in a container serve listens on every interface, on the
# port the HEALTHCHECK below asks (change both together by setting SPENDWATCH_PORT at run time).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPENDWATCH_HOME=/var/lib/spendwatch SPENDWATCH_HOST=0.0.0.0 SPENDWATCH_PORT=8080
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/spendwatch-*.whl)[all,lambda]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/spendwatch --create-home --shell /usr/sbin/nologin spendwatch
USER 10001:10001
WORKDIR /var/lib/spendwatch
EXPOSE 8080
# /healthz answers 503 when the last scan failed or the next one is overdue; python is here, curl is not.
HEALTHCHECK --interval=60s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SPENDWATCH_PORT', '8080'), timeout=4).status == 200 else 1)"]
ENTRYPOINT ["spendwatch"]
CMD ["serve", "--config", "/etc/spendwatch/spendwatch.toml"]
