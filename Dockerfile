# syntax=docker/dockerfile:1
# The runner image. CPU and GPU: TensorFlow uses a visible GPU with no code change.
# (The operator image and a CUDA base come with the Helm chart work.)
FROM python:3.11-slim AS runner
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_USE_LEGACY_KERAS=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY runner ./runner
RUN python -m pip install '.[runner]' && useradd --uid 10001 --create-home runner
USER 10001
ENTRYPOINT ["edgecompress-runner"]
CMD ["--help"]
