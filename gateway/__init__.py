"""A self-hosted, AWS-Lambda-compatible invocation gateway."""

__version__ = "0.1.0"
