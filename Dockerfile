# aliasd container: build in one stage, run from a slim one with no build tools.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aliasd ./aliasd
RUN python -m venv /opt/aliasd \
 && /opt/aliasd/bin/pip install --no-cache-dir ".[fast]"

FROM python:3.12-slim
COPY --from=build /opt/aliasd /opt/aliasd
# No .pyc writes at run time: the root filesystem can be read-only.
ENV PATH=/opt/aliasd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ALIASD_LOG_FORMAT=json \
    ALIASD_DNS_LISTEN=0.0.0.0:5353 \
    ALIASD_HTTP_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 5353/udp 5353/tcp 8080/tcp
ENTRYPOINT ["aliasd"]
CMD ["run"]
