"""AtlasConfig: defaults, YAML, dicts, keywords, ATLAS_* overrides, and one-line errors."""

from __future__ import annotations

import pytest

from atlas_learning.config import ROLES, AtlasConfig, ModelSettings
from atlas_learning.errors import ConfigError


def test_defaults_need_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = AtlasConfig.load(environ={})
    assert config.storage.url == "sqlite:///.atlas/atlas.db"
    for role in ROLES:
        settings = config.models.for_role(role)
        assert (settings.provider, settings.model) == ("local", "smollm2")


def test_yaml_file_sets_roles_and_default_fills_the_rest(tmp_path) -> None:
    path = tmp_path / "atlas.yaml"
    path.write_text(
        "models:\n"
        "  default: {provider: openai, model: gpt-4.1-mini}\n"
        "  teacher: {provider: anthropic, model: claude-sonnet-4-5, temperature: 0.3}\n"
        "storage:\n  url: postgresql://postgres@127.0.0.1:5432/test\n"
    )
    config = AtlasConfig.load(path, environ={})
    assert config.models.for_role("teacher").provider == "anthropic"
    assert config.models.for_role("teacher").temperature == 0.3
    assert config.models.for_role("judge_small").model == "gpt-4.1-mini"
    assert config.storage.url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_atlas_yaml_in_working_directory_and_atlas_config_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atlas.yaml").write_text("storage: {url: 'sqlite:///here.db'}\n")
    (tmp_path / "other.yaml").write_text("storage: {url: 'sqlite:///there.db'}\n")
    assert AtlasConfig.load(environ={}).storage.url == "sqlite:///here.db"
    assert AtlasConfig.load(environ={"ATLAS_CONFIG": str(tmp_path / "other.yaml")}).storage.url == "sqlite:///there.db"


def test_dict_keywords_and_environment_precedence(tmp_path) -> None:
    source = {"models": {"default": {"provider": "scripted"}}, "storage": {"url": "sqlite:///a.db"}}
    config = AtlasConfig.load(source, storage={"url": "sqlite:///b.db"}, environ={})
    assert config.storage.url == "sqlite:///b.db"  # keywords over the dict
    env = {"ATLAS_STORAGE__URL": "sqlite:///c.db", "ATLAS_MODELS__TEACHER__PROVIDER": "openai",
           "ATLAS_MODELS__TEACHER__MODEL": "gpt-4o", "ATLAS_MODELS__TEACHER__TEMPERATURE": "0.7", "UNRELATED": "x"}
    config = AtlasConfig.load(source, storage={"url": "sqlite:///b.db"}, environ=env)
    assert config.storage.url == "sqlite:///c.db"  # the environment over everything
    teacher = config.models.for_role("teacher")
    assert (teacher.provider, teacher.model, teacher.temperature) == ("openai", "gpt-4o", 0.7)
    assert config.models.for_role("probe").provider == "scripted"


def test_an_existing_config_is_accepted_and_overridden() -> None:
    base = AtlasConfig.load({"storage": {"url": "sqlite:///x.db"}}, environ={})
    again = AtlasConfig.load(base, models={"default": {"provider": "scripted"}}, environ={})
    assert again.storage.url == "sqlite:///x.db" and again.models.default.provider == "scripted"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("models:\n  teacher:\n    temperature: hot\n", "atlas.yaml: models.teacher.temperature: Input should be a valid number"),
        ("models:\n  teacher: {provider: mystery}\n", "atlas.yaml: models.teacher.provider: Input should be 'openai'"),
        ("models:\n  teacher: {provider: openai}\n", "atlas.yaml: models.teacher: Value error, model is required for provider openai"),
        ("storage:\n  url: mysql://x\n", "atlas.yaml: storage.url: Value error, expected a sqlite:/// or postgresql+psycopg:// URL"),
        ("storage:\n  colour: blue\n", "atlas.yaml: storage.colour: no such field"),
        ("models: [1, 2\n", "atlas.yaml:2:1: "),
        ("- just\n- a list\n", "atlas.yaml: expected a mapping of sections"),
    ],
)
def test_invalid_file_is_one_line_naming_file_and_field(tmp_path, monkeypatch, yaml_text: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atlas.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        AtlasConfig.load("atlas.yaml", environ={})
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message and "Traceback" not in message


def test_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^ATLAS_\* environment: models.default.max_tokens: Input should be greater than 0"):
        AtlasConfig.load(environ={"ATLAS_MODELS__DEFAULT__MAX_TOKENS": "0"})
    with pytest.raises(ConfigError, match="empty level"):
        AtlasConfig.load(environ={"ATLAS_STORAGE____URL": "x"})


def test_missing_file_and_unknown_role() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        AtlasConfig.load("/nonexistent/atlas.yaml", environ={})
    with pytest.raises(ConfigError, match="unknown model role 'critic'"):
        AtlasConfig().models.for_role("critic")


def test_api_key_env_defaults_per_provider() -> None:
    assert ModelSettings(provider="openai", model="m").resolved_api_key_env() == "OPENAI_API_KEY"
    assert ModelSettings(provider="anthropic", model="m").resolved_api_key_env() == "ANTHROPIC_API_KEY"
    assert ModelSettings(provider="google", model="m").resolved_api_key_env() == "GEMINI_API_KEY"
    assert ModelSettings(provider="openai", model="m", api_key_env="VLLM_KEY").resolved_api_key_env() == "VLLM_KEY"
    assert ModelSettings().resolved_api_key_env() is None


def test_a_default_key_env_is_for_the_providers_own_host_only() -> None:
    other = ModelSettings(provider="openai", model="m", base_url="http://127.0.0.1:8000/v1")
    assert other.resolved_api_key_env() is None  # OPENAI_API_KEY is not sent to another host
    assert ModelSettings(provider="openai", model="m", base_url="https://api.openai.com/v1").resolved_api_key_env() == "OPENAI_API_KEY"
    assert ModelSettings(provider="anthropic", model="m", base_url="https://proxy.internal").resolved_api_key_env() is None


@pytest.mark.parametrize("base_url", ["localhost:8000/v1", "not a url", "", "ftp://host/v1", "http://"])
def test_a_base_url_that_is_not_an_http_url_fails_when_the_config_loads(base_url: str) -> None:
    with pytest.raises(ConfigError, match=r"base_url .*http://localhost:8000/v1"):
        AtlasConfig.load({"models": {"teacher": {"provider": "openai", "model": "m", "base_url": base_url}}}, environ={})


def test_a_key_pasted_into_api_key_env_is_refused_and_not_echoed() -> None:
    key = "sk-proj-" + "Q7w" * 12
    with pytest.raises(ConfigError, match="names the environment variable") as caught:
        AtlasConfig.load({"models": {"teacher": {"provider": "openai", "model": "m", "api_key_env": key}}}, environ={})
    assert key[10:30] not in str(caught.value)


def test_a_missing_model_hint_fits_the_provider() -> None:
    with pytest.raises(ConfigError, match="claude-"):
        AtlasConfig.load({"models": {"teacher": {"provider": "anthropic"}}}, environ={})


def test_a_cloud_model_named_alone_gets_its_provider() -> None:
    config = AtlasConfig.load({}, environ={"ATLAS_MODELS__TEACHER__MODEL": "gpt-4.1"})
    assert (config.models.teacher.provider, config.models.teacher.model) == ("openai", "gpt-4.1")
    assert AtlasConfig.load({"models": {"judge_small": {"model": "claude-haiku-4-5"}}}, environ={}).models.judge_small.provider == "anthropic"
    assert AtlasConfig.load({"models": {"probe": {"model": "gemini-2.5-flash"}}}, environ={}).models.probe.provider == "google"
    assert AtlasConfig.load({"models": {"probe": {"model": "smollm2"}}}, environ={}).models.probe.provider == "local"


def test_options_on_a_cloud_provider_are_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="provider openai takes none"):
        AtlasConfig.load({"models": {"teacher": {"provider": "openai", "model": "gpt-4.1", "options": {"top_p": 0.9}}}}, environ={})
