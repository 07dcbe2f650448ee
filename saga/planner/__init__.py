"""The planner: an OpenAI Agents SDK agent that turns a request into a plan.

The agent (``_agent``), its settings and Temporal plugin (``_agent_settings``), the HTTP
model endpoint (``_model_endpoint``) and the offline stand-in model (``_offline_model``).
Besides the worker, which installs the plugin, nothing else in saga imports the SDK.
"""
