# One image for both roles: `planelink gateway …` and `planelink agent …` (see deploy/charts).
# Two stages: the first installs planelink and its locked dependencies into a virtual
# environment at its final path; the second copies that environment whole onto a fresh base.
# So no wheel, pip cache, compiler or build tool ships in any layer, and nothing is deleted
# after it was added (a deleted file still costs its layer). The test servers (envtest) stay out.
# It runs as an unprivileged user and works on a read-only root file system: nothing is written
# outside the state directory, and the byte-code is compiled at build time.
FROM python:3.11-slim AS build
LABEL org.opencontainers.image.title=planelink
RUN python3 -m venv /opt/planelink
COPY requirements/runtime.lock /tmp/runtime.lock
RUN /opt/planelink/bin/pip install --no-cache-dir --disable-pip-version-check \
        --requirement /tmp/runtime.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY certs certs
COPY crd crd
COPY kubeobject kubeobject
COPY http1 http1
COPY http2 http2
COPY tunnel tunnel
COPY kubeproxy kubeproxy
COPY gateway gateway
COPY agent agent
COPY planelink planelink
# pip and setuptools leave too: the image installs nothing at run time.
RUN /opt/planelink/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/planelink/bin/pip uninstall --yes --quiet pip setuptools

FROM python:3.11-slim
LABEL org.opencontainers.image.title=planelink
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin planelink \
    && install -d -o 10001 -m 0700 /var/lib/planelink
# /var/lib/planelink: state of docker-compose.yml's services. A fresh named volume mounted there
# takes this directory's owner, so the non-root user can write into it.
COPY --from=build /opt/planelink /opt/planelink
ENV PATH=/opt/planelink/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8443 6443 8081 8080
ENTRYPOINT ["planelink", "--log-format", "json"]
CMD ["--help"]
