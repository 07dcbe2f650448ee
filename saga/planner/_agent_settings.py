"""The planner model's configuration, and the model provider the worker's plugin uses.

Secrets stay here, on the worker: the workflow names no model and no endpoint, so an API
key never reaches workflow inputs or history. With ``OPENAI_API_KEY`` set, model calls go
to the OpenAI-compatible endpoint at ``OPENAI_BASE_URL`` (OpenAI itself when unset; vLLM,
Ollama... otherwise); without a key, to the offline planner.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from agents import Model, ModelProvider, OpenAIChatCompletionsModel, OpenAIResponsesModel
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.common import RetryPolicy
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin

from saga.planner._model_endpoint import ModelEndpoint
from saga.planner._offline_model import OfflinePlanner

ACTIVITY_MARGIN_SECONDS = 10
"""The model activity's start-to-close time-out is the HTTP time-out plus this: a call
that hangs is ended by the client, which can say which endpoint did not answer."""


class AgentSettings(BaseSettings):
    """Knobs of the planner agent; ``SAGA_*`` variables, plus the OpenAI client's own."""

    model_config = SettingsConfigDict(
        env_prefix="SAGA_", extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    model: str = Field("gpt-4.1-mini", description="Model name sent to the endpoint.")
    model_api: Literal["chat_completions", "responses"] = Field(
        "chat_completions",
        description="`chat_completions` (/v1/chat/completions: OpenAI, vLLM, Ollama...) "
        "or `responses` (/v1/responses).",
    )
    model_timeout_seconds: float = Field(
        120,
        gt=0,
        description="How long one model call waits for the endpoint (connect, then each "
        "read); the model activity's start-to-close time-out is this plus "
        f"{ACTIVITY_MARGIN_SECONDS} s.",
    )
    model_max_attempts: int = Field(
        5, ge=1, description="Attempts per model call before planning fails (0 is not allowed)."
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="API key of the endpoint; unset means the offline planner.",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="Base URL of an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.",
    )

    @property
    def offline(self) -> bool:
        return self.openai_api_key is None or not self.openai_api_key.get_secret_value()


class SagaModelProvider(ModelProvider):
    """Runs inside the model activity: the configured endpoint, or the offline planner."""

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        self._endpoint: ModelEndpoint | None = None
        if not settings.offline:
            assert settings.openai_api_key is not None
            self._endpoint = ModelEndpoint(
                settings.openai_api_key.get_secret_value(),
                settings.openai_base_url,
                model=settings.model,
                timeout_seconds=settings.model_timeout_seconds,
            )

    def get_model(self, model_name: str | None) -> Model:
        if self._endpoint is None:
            return OfflinePlanner()
        name = model_name or self._settings.model
        client = self._endpoint.client
        model: Model
        if self._settings.model_api == "responses":
            model = OpenAIResponsesModel(model=name, openai_client=client)
        else:
            model = OpenAIChatCompletionsModel(model=name, openai_client=client)
        return self._endpoint.model(model)


def agents_plugin(
    settings: AgentSettings | None = None, *, model_provider: ModelProvider | None = None
) -> OpenAIAgentsPlugin:
    """The plugin that makes every model call of the planner a Temporal activity."""
    settings = settings or AgentSettings()
    return OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(
            start_to_close_timeout=timedelta(
                seconds=settings.model_timeout_seconds + ACTIVITY_MARGIN_SECONDS
            ),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=settings.model_max_attempts,
            ),
        ),
        model_provider=model_provider or SagaModelProvider(settings),
    )
