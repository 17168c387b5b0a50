# One image for the API and the worker. The base brings a CUDA build of PyTorch; the
# project's own torch requirement is a range it satisfies, so pip installs no other
# (tests/worker/test_deploy.py holds the two together: the trainer needs torch >= 2.6).
ARG BASE_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
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
RUN pip install -e . \
    && useradd --create-home --uid 10001 trainlens \
    && mkdir -p /data \
    && chown trainlens:trainlens /data

# Not root: a bug in the API or a training run cannot take over the container. A new
# named volume takes /data's owner from the image.
USER trainlens
VOLUME /data
EXPOSE 8000
# /healthz answers 200 only when the database answers a query (503 otherwise).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# Serving on 0.0.0.0 needs TRAINLENS_TOKEN: without it `serve` refuses to start.
CMD ["trainlens", "serve", "--no-worker"]
