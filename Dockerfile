# aliasd container: build in one stage, run from a slim one with no build tools.
# BASE_IMAGE: any Python >= 3.11 image with `python` on PATH (the tests build
# with a local stand-in: hack/kind/build.sh).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE} AS build
WORKDIR /src
# Pinned and hash-checked (requirements.lock, made by hack/lock.sh): the same
# dependencies on every build.
COPY requirements.lock ./
RUN python -m venv /opt/aliasd \
 && /opt/aliasd/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY aliasd ./aliasd
# aliasd itself (its dependencies are all above); then no pip or setuptools in the venv.
RUN /opt/aliasd/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && /opt/aliasd/bin/pip uninstall -q -y setuptools pip

FROM ${BASE_IMAGE}
# Nothing installs packages at run time: drop the base image's pip.
RUN python -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
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
