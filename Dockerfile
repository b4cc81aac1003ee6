# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t edgecompress-operator .   (slim Python, operator dependencies only)
#   docker build --target runner   -t edgecompress-runner .     (TensorFlow GPU base, runner dependencies only)
# Both install with the same command as CI (pip install -c constraints.txt '.[<extra>]'), from a wheel
# built in the `build` stage, so no build tool reaches a final image. Both run as UID 10001, the
# user the operator's pod security contexts ask for.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG TENSORFLOW_GPU_IMAGE=tensorflow/tensorflow:2.21.0-gpu

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY runner ./runner
COPY operator ./operator
COPY contract ./contract
RUN python -m pip wheel -c constraints.txt --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN python -m pip install -c /tmp/constraints.txt "$(ls /wheels/edgecompress-*.whl)[operator]" \
    && rm -rf /wheels /tmp/constraints.txt \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin edgecompress
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["edgecompress-operator"]
CMD ["--log-format", "json"]

FROM ${TENSORFLOW_GPU_IMAGE} AS runner
# TF_USE_LEGACY_KERAS: tfmot needs tf-keras (Keras 2); TensorFlow sees the GPU through the base
# image's CUDA libraries (CUDA_VISIBLE_DEVICES and the NVIDIA device plugin decide which).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 HOME=/tmp
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN python -m pip install -c /tmp/constraints.txt "$(ls /wheels/edgecompress-*.whl)[runner]" \
    && rm -rf /wheels /tmp/constraints.txt \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin edgecompress
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["edgecompress-runner"]
CMD ["--help"]
