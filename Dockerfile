# One image for web and worker (cookiecutter-django's rule).
FROM python:3.11-slim
# NUMBA_CACHE_DIR: the fingerprint's compiled casts are cached where the app user may write (/app is root's).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MODELXREF_DATA_DIR=/data NUMBA_CACHE_DIR=/data/numba-cache
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home --uid 1000 modelxref && mkdir -p /data && chown modelxref /data
USER modelxref
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--timeout", "3600"]
