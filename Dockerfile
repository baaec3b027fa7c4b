# One image for the API and the workers; the command picks the role.
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY src ./src
COPY workers ./workers
COPY routing.toml routing.dev.toml ./
RUN uv sync --locked --no-dev
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000
CMD ["aijobs", "api", "--host", "0.0.0.0"]
