"""Unit tests of gateway/deploy.py's request bodies (the live `--deploy` paths are in the e2e and API tests)."""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from pathlib import Path

import pytest

from gateway.deploy import _request_body


def test_code_in_function_json_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A function.json naming S3Bucket/S3Key: the directory's files are deployed, and the log says so."""
    directory = tmp_path / "fn"
    directory.mkdir()
    (directory / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    code = {"S3Bucket": "bucket", "S3Key": "app.zip"}
    (directory / "function.json").write_text(json.dumps({"Handler": "lambda_function.lambda_handler", "Code": code}))
    with caplog.at_level(logging.WARNING, logger="gateway.deploy"):
        body = _request_body(directory, "arn:aws:iam::123456789012:role/r")
    assert set(body["Code"]) == {"ZipFile"}
    names = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["Code"]["ZipFile"]))).namelist()
    assert "lambda_function.py" in names
    assert "function.json's Code is ignored" in caplog.text
