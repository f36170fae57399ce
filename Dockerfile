# One image for both roles: `planelink gateway …` and `planelink agent …` (see deploy/charts).
# Built in two stages so that the final image holds wheels' results only — no compiler, no pip
# cache — and runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY certs certs
COPY crd crd
COPY kubeobject kubeobject
COPY http1 http1
COPY tunnel tunnel
COPY kubeproxy kubeproxy
COPY gateway gateway
COPY agent agent
COPY envtest envtest
COPY planelink planelink
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin planelink \
    && install -d -o 10001 -m 0700 /var/lib/planelink
# /var/lib/planelink: state of docker-compose.yml's services. A fresh named volume mounted there
# takes this directory's owner, so the non-root user can write into it.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 8443 6443 8081 8080
ENTRYPOINT ["planelink", "--log-format", "json"]
CMD ["--help"]
