"""Settings: flags over environment over defaults, validated once."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import botocore
import pytest

from gateway.settings import Settings, partition_of


def _args(**kw: object) -> argparse.Namespace:
    base = {"host": None, "port": None, "data_dir": None, "idle_timeout": None, "deploy": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_defaults() -> None:
    s = Settings.from_args(_args(), {})
    assert (s.host, s.port, s.region, s.account_concurrency) == ("127.0.0.1", 9000, "us-east-1", 1000)
    assert s.data_dir == Path(".gateway-data").resolve()  # absolute: environments chdir elsewhere
    assert s.runtimes == {}  # explicit mappings only: the catalog finds the rest on the host
    assert s.runtime_fallback is False


def test_flags_win_over_environment() -> None:
    env = {"GATEWAY_PORT": "9100", "GATEWAY_IDLE_TIMEOUT": "7", "GATEWAY_REGION": "eu-west-1"}
    s = Settings.from_args(_args(port=9200), env)
    assert s.port == 9200
    assert s.idle_timeout == 7.0
    assert s.region == "eu-west-1"
    assert s.function_arn("f", "3") == "arn:aws:lambda:eu-west-1:123456789012:function:f:3"


def test_runtime_interpreter_override() -> None:
    env = {"GATEWAY_RUNTIME_PYTHON3_9": "/opt/py39/bin/python", "GATEWAY_RUNTIME_PYTHON3_14": " /opt/py314 "}
    s = Settings.from_args(_args(), {**env, "GATEWAY_RUNTIME_PYTHON3_13": "", "GATEWAY_RUNTIME_FALLBACK": "1"})
    assert s.runtimes == {"python3.9": "/opt/py39/bin/python", "python3.14": "/opt/py314"}
    assert s.runtime_fallback is True


@pytest.mark.parametrize(
    "env",
    [
        {"GATEWAY_ACCOUNT_ID": "42"},
        {"GATEWAY_PORT": "70000"},
        {"GATEWAY_IDLE_TIMEOUT": "0"},
        {"GATEWAY_S3_ENDPOINT": "minio:9000"},  # no scheme: botocore would refuse it at every S3 create
        {"GATEWAY_S3_ENDPOINT": "ftp://minio:9000"},
        {"GATEWAY_S3_ENDPOINT": "http://"},
        {"GATEWAY_S3_TIMEOUT": "0"},
        {"GATEWAY_S3_TIMEOUT": "nan"},
        {"GATEWAY_S3_TIMEOUT": "inf"},
        {"GATEWAY_S3_TIMEOUT": "-1"},
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_args(_args(), env)


def test_s3_endpoint_and_timeout() -> None:
    s = Settings.from_args(_args(), {"GATEWAY_S3_ENDPOINT": "https://minio.internal:9000", "GATEWAY_S3_TIMEOUT": "2.5"})
    assert (s.s3_endpoint, s.s3_timeout) == ("https://minio.internal:9000", 2.5)


def test_authentication_is_required_beyond_loopback_or_with_credentials() -> None:
    assert not Settings.from_args(_args(), {}).auth_required  # loopback, no credentials: off
    keys = {"GATEWAY_ACCESS_KEY_ID": "AK", "GATEWAY_SECRET_ACCESS_KEY": "s3cr3t-value"}
    assert Settings.from_args(_args(), keys).auth_required  # credentials given: always on
    assert Settings.from_args(_args(host="0.0.0.0"), keys).auth_required
    with pytest.raises(ValueError, match="--insecure-no-auth"):
        Settings.from_args(_args(host="0.0.0.0"), {})
    insecure = Settings.from_args(_args(host="0.0.0.0", insecure_no_auth=True), {})
    assert not insecure.auth_required
    assert not Settings.from_args(_args(host="10.0.0.5"), {"GATEWAY_INSECURE_NO_AUTH": "1"}).auth_required
    assert "s3cr3t-value" not in repr(Settings.from_args(_args(), keys))  # secrets stay out of logs


def test_metrics_auth_settings(tmp_path: Path) -> None:
    assert (Settings.from_args(_args(), {}).metrics_auth, Settings.metrics_token) == ("off", "")
    token = Settings.from_args(_args(), {"GATEWAY_METRICS_TOKEN": "t0k"})
    assert (token.metrics_auth, token.metrics_token) == ("bearer", "t0k")
    assert "t0k" not in repr(token)
    path = tmp_path / "token"
    path.write_text("from-file\n")
    from_file = Settings.from_args(_args(), {"GATEWAY_METRICS_TOKEN_FILE": str(path)})
    assert (from_file.metrics_auth, from_file.metrics_token) == ("bearer", "from-file")
    for bad in (
        {"GATEWAY_METRICS_AUTH": "bearer"},  # no token
        {"GATEWAY_METRICS_AUTH": "sigv4", "GATEWAY_METRICS_TOKEN": "t"},
        {"GATEWAY_METRICS_AUTH": "off", "GATEWAY_METRICS_TOKEN": "t"},  # contradictory: refused, not ignored
        {"GATEWAY_METRICS_TOKEN_FILE": str(tmp_path / "missing")},
    ):
        with pytest.raises(ValueError):
            Settings.from_args(_args(), bad)


def test_connections_per_client_setting() -> None:
    assert Settings.from_args(_args(), {}).max_connections_per_client == Settings.max_connections_per_client
    assert Settings.from_args(_args(), {"GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "7"}).max_connections_per_client == 7
    with pytest.raises(ValueError):
        Settings.from_args(_args(), {"GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "0"})


def test_environment_listener_and_session_ttl() -> None:
    s = Settings.from_args(_args(), {})
    assert s.environment_listen is None and s.session_ttl == 12 * 3600
    assert s.environment_endpoint == "http://127.0.0.1:9000"  # environments call the main listener
    s = Settings.from_args(_args(), {"GATEWAY_ENVIRONMENT_LISTEN": "10.200.0.1:9001", "GATEWAY_SESSION_TTL": "600"})
    assert s.environment_listen == ("10.200.0.1", 9001) and s.session_ttl == 600
    assert s.environment_endpoint == "http://10.200.0.1:9001"
    assert Settings.from_args(_args(), {"GATEWAY_ENVIRONMENT_LISTEN": "[fd00::1]:9001"}).environment_endpoint == (
        "http://[fd00::1]:9001"
    )
    for bad in ("9001", "host:", ":9001", "h:99999", "127.0.0.1:9000"):
        with pytest.raises(ValueError):
            Settings.from_args(_args(), {"GATEWAY_ENVIRONMENT_LISTEN": bad})
    with pytest.raises(ValueError):
        Settings.from_args(_args(), {"GATEWAY_SESSION_TTL": "1"})


def test_mq_brokers() -> None:
    arn = "arn:aws:mq:us-east-1:123456789012:broker:orders:b-1234"
    brokers = f'{{"{arn}": "amqp://u:pw@127.0.0.1:5672/"}}'
    s = Settings.from_args(_args(), {"GATEWAY_MQ_BROKERS": brokers})
    assert s.mq_brokers == {arn: "amqp://u:pw@127.0.0.1:5672/"}
    assert "pw" not in repr(s)  # the URLs hold passwords
    assert Settings.from_args(_args(), {}).mq_brokers == {}
    for bad in (
        "{",
        "[]",
        '{"arn:aws:sqs:us-east-1:123456789012:q": "amqp://h/"}',
        f'{{"{arn}": "http://u:secret-pw@h/"}}',
        f'{{"{arn}": "amqp://u:secret-pw@/"}}',
        f'{{"{arn}": 5}}',
    ):
        with pytest.raises(ValueError) as caught:
            Settings.from_args(_args(), {"GATEWAY_MQ_BROKERS": bad})
        assert "secret-pw" not in str(caught.value)


def test_function_invoke() -> None:
    assert Settings.from_args(_args(), {}).function_invoke == "any"
    assert Settings.from_args(_args(), {"GATEWAY_FUNCTION_INVOKE": "Policy "}).function_invoke == "policy"
    assert Settings.from_args(_args(), {"GATEWAY_FUNCTION_INVOKE": "any"}).function_invoke == "any"
    with pytest.raises(ValueError, match="GATEWAY_FUNCTION_INVOKE"):
        Settings.from_args(_args(), {"GATEWAY_FUNCTION_INVOKE": "none"})


def test_policy_mode_is_refused_where_functions_reach_an_open_api() -> None:
    from gateway.__main__ import policy_unenforceable

    rlimits = {"GATEWAY_FUNCTION_INVOKE": "policy", "GATEWAY_SANDBOX": "rlimits"}
    reason = policy_unenforceable(Settings.from_args(_args(), rlimits))
    assert reason is not None and "GATEWAY_FUNCTION_INVOKE=policy cannot be enforced" in reason
    keys = {"GATEWAY_ACCESS_KEY_ID": "k", "GATEWAY_SECRET_ACCESS_KEY": "s"}
    assert policy_unenforceable(Settings.from_args(_args(), rlimits | keys)) is None
    assert policy_unenforceable(Settings.from_args(_args(), {"GATEWAY_SANDBOX": "rlimits"})) is None


def test_code_signing_on_an_open_api_is_warned_about(tmp_path: Path) -> None:
    """Functions that are not jailed reach an API without operator credentials unsigned: code signing binds only
    what the operator deploys, and the start-up log says so (a warning: the gateway still starts)."""
    from gateway.__main__ import signing_bypassable

    profiles = {"GATEWAY_SIGNING_PROFILES": str(tmp_path / "profiles.json"), "GATEWAY_SANDBOX": "rlimits"}
    reason = signing_bypassable(Settings.from_args(_args(), profiles))
    assert reason is not None and "code signing (GATEWAY_SIGNING_PROFILES) does not bind functions" in reason
    keys = {"GATEWAY_ACCESS_KEY_ID": "k", "GATEWAY_SECRET_ACCESS_KEY": "s"}
    assert signing_bypassable(Settings.from_args(_args(), profiles | keys)) is None
    assert signing_bypassable(Settings.from_args(_args(), {"GATEWAY_SANDBOX": "rlimits"})) is None


def test_the_partition_follows_the_region_as_botocore_says() -> None:
    """Issue 18, cause 2. Source: botocore's partitions.json (each partition's regions and `regionRegex`)."""
    partitions = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())["partitions"]
    checked = 0
    for partition in partitions:
        for region in partition["regions"]:
            if region.startswith(partition["id"]):  # `aws-global` and its kind are endpoints, not regions
                continue
            assert partition_of(region) == partition["id"], region
            checked += 1
    assert checked > 30
    assert Settings(region="cn-northwest-1").function_arn("f", "1") == (
        "arn:aws-cn:lambda:cn-northwest-1:123456789012:function:f:1"
    )
    assert Settings().partition == "aws"
