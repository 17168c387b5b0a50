# One image for the API and the worker. The base brings a CUDA build of PyTorch; the
# project's own torch requirement is a range it satisfies, so pip installs no other.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TRAINLENS_DATA_DIR=/data \
    TRAINLENS_HOST=0.0.0.0 \
    TRAINLENS_PORT=8000

WORKDIR /opt/trainlens
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
COPY trainer ./trainer
COPY static ./static
RUN pip install -e .

VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["trainlens", "serve", "--no-worker"]
