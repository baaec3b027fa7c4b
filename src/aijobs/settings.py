"""Process settings, read once from the environment (prefix ``AIJOBS_``) and passed explicitly.

Routing policy (providers, features, lanes) lives in ``routing.toml`` (see :mod:`aijobs.routing`);
this module holds only what differs between deployments of the same policy: where Redis and the blob
store are, secrets, ports and limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a process reads from its environment. Build once with ``Settings()``."""

    model_config = SettingsConfigDict(env_prefix="AIJOBS_", env_file=".env", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description="Redis holding job records, keys and the arq queues.",
    )
    routing_file: Path = Field(default=Path("routing.toml"), description="Routing policy file.")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = Field(
        default="",
        description="Base URL users reach the API at; used in local blob URLs. Defaults to http://host:port.",
    )
    signing_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC secret for local blob URLs; every API and worker process must share it.",
    )

    blob_backend: Literal["local", "s3"] = "local"
    blob_dir: Path = Path(".aijobs/blobs")
    blob_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    s3_bucket: str = "aijobs"
    s3_endpoint_url: str = Field(default="", description="For MinIO, R2 and other S3-compatible stores.")
    s3_public_url: str = Field(
        default="",
        description="The store's address as users reach it, if not s3_endpoint_url (signed links).",
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr = SecretStr("")
    s3_secret_access_key: SecretStr = SecretStr("")

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long finished records are kept.")
    key_cache_ttl_s: float = Field(default=10.0, ge=0, description="How long an API key lookup is cached.")
    max_output_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest media output copied into the blob store."
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="POST /v1/files limit.")
    max_input_image_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="An input image fetched from a URL, at most."
    )
    file_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long uploaded files are kept.")
    max_batch_lines: int = Field(default=200_000, ge=1, description="Requests in one batch input file.")
    batch_window: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Lines of one batch running at once (its share of the lane).",
    )
    max_batch_line_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="One request line of a batch input file, at most."
    )
    shutdown_grace_s: float = Field(
        default=25.0, ge=0, le=3600,
        description="How long a stopping worker lets running jobs finish (at most a lane's job_timeout_s) "
        "before it hands the rest back; keep it under the container's stop timeout.",
    )  # fmt: skip
    outbound_allow: str = Field(
        default="", description="Hosts and CIDRs the outbound URL guard lets through (comma-separated)."
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(default="json", description="json: one object per line.")

    @model_validator(mode="after")
    def _fill_public_url(self) -> Settings:
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        self.public_url = self.public_url.rstrip("/")
        return self

    def require_signing_secret(self) -> bytes:
        """The blob-URL secret as bytes; a local blob store cannot run without one."""
        secret = self.signing_secret.get_secret_value()
        if len(secret) < 16:
            raise ValueError("AIJOBS_SIGNING_SECRET must be set to at least 16 characters")
        return secret.encode()
